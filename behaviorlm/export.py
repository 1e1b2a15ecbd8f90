"""A tuned run as a standalone Hugging Face model directory, for serving without this project.

    behaviorlm export outputs/behaviorlm/2026-12-03_10-00-00 --output my_model --merge   # LoRA merged into the base
    behaviorlm export RUN_DIR --output my_adapter                                       # the adapter, base named

With --merge the LoRA update is folded into the base weights (peft's `merge_and_unload`), so
`AutoModelForCausalLM.from_pretrained(DIR)` loads it with no project code; without it the folder holds the adapter
alone and names its base model (`PeftModel.from_pretrained(base, DIR)`). Either way the folder has the tokenizer,
`behaviorlm_manifest.json` (the behavior vocabulary and the prompt settings the run ranked with) and a model card,
README.md, with the run's config, data and test metrics. The folder is written beside the target and renamed into
place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional

from behaviorlm.utils import shareable

CARD_METRICS = ("acc_overall", "acc_anchor", "acc_tail", "macro_f1", "acc_at_5")


def base_model_name(manifest: dict[str, Any], run_dir: Path) -> str:
    """What an adapter-only export names as its base: the hub id, else the local folder the run loaded."""
    model = manifest["model"]
    if model.get("source") == "hub" and model.get("hub_id"):
        return model["hub_id"]
    folder = manifest["base_model_folder"]
    return str((run_dir / folder).resolve()) if folder == "base_model" else folder


def model_card(run_dir: Path, manifest: dict[str, Any], metrics: dict[str, Any], merged: bool, base: str) -> str:
    """README.md: what the model predicts, how to load it, the run's data, test metrics and config."""
    rows = []
    for name in CARD_METRICS:
        value = metrics.get(f"test/{name}")
        if value is None:
            continue
        low, high = metrics.get(f"test/{name}_ci_low"), metrics.get(f"test/{name}_ci_high")
        interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
        rows.append(f"| {name} | {value:.3f}{interval} |")
    config_path = run_dir / ".hydra" / "config.yaml"
    config = (config_path.read_text(encoding="utf-8") if config_path.exists()
              else json.dumps(manifest["model"], indent=1))  # a run made outside Hydra: its model settings
    tau = metrics.get("test/logit_adjustment_tau") or 0.0
    load = ("from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"DIR\")"
            if merged else "from peft import AutoPeftModelForCausalLM\n"
                           "model = AutoPeftModelForCausalLM.from_pretrained(\"DIR\")  # loads the base named below")
    vocab = manifest["vocab"]
    return "\n".join([
        "---", f"library_name: {'transformers' if merged else 'peft'}", f"base_model: {base}",
        "tags: [behaviorlm, next-behavior-prediction, lora]", "---", "",
        f"# BehaviorLM: {metrics.get('stage_order', 'run')} on {metrics.get('data', 'data')}", "",
        f"Exported on {date.today()} by behaviorlm {version('behaviorlm')} from `{run_dir.resolve()}` "
        f"({'LoRA merged into the base weights' if merged else 'LoRA adapter; base model: ' + base}).", "",
        "It ranks the next behavior of a user among the run's behavior names by the likelihood of each name after "
        "a prompt of the user's recent behaviors; `behaviorlm_manifest.json` holds the names "
        f"({len(vocab.get('names', []))}, of which {len(vocab.get('anchors', []))} anchors) and the prompt settings.",
        "", "```python", load, "```", "",
        "## Data", "",
        f"`{metrics.get('data')}`: {metrics.get('n_train')} training, {metrics.get('n_val')} validation and "
        f"{metrics.get('n_test')} test samples (test split later in time than training).", "",
        "## Test metrics (held-out test set, Wilson 95% intervals)", "",
        "| metric | value |", "|---|---|", *rows, "",
        *([f"The run ranked with a logit adjustment (tau = {tau}) that is not part of the weights: ranking with "
           "this model alone gives other numbers.", ""] if tau else []),
        "## Config", "", "```yaml", config.rstrip(), "```", ""])


def export(run_dir: Path, output: Path, merge: bool) -> Path:
    from behaviorlm.predict import BehaviorPredictor

    if output.exists():
        raise FileExistsError(f"--output '{output}' exists: choose a new folder or remove it")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    predictor = BehaviorPredictor.load(run_dir, device="cpu")
    model, tokenizer = predictor.bm.model, predictor.bm.tokenizer
    base = base_model_name(manifest, run_dir)
    staging = output.with_name(f".{output.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if merge:
            model.merge_and_unload().save_pretrained(staging)
        else:
            model.save_pretrained(staging)
            config_path = staging / "adapter_config.json"
            adapter_config = json.loads(config_path.read_text())
            adapter_config["base_model_name_or_path"] = base
            config_path.write_text(json.dumps(adapter_config, indent=2) + "\n")
        tokenizer.save_pretrained(staging)
        (staging / "behaviorlm_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        (staging / "README.md").write_text(model_card(run_dir, manifest, metrics, merge, base), encoding="utf-8")
        shareable(staging)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="behaviorlm export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run's output folder (manifest.json, adapter/, metrics.json)")
    parser.add_argument("--output", type=Path, required=True, help="the model directory to create")
    parser.add_argument("--merge", action="store_true", help="fold the LoRA into the base weights (a plain "
                                                             "transformers model); default: the adapter alone")
    args = parser.parse_args(argv)
    if not (args.run_dir / "manifest.json").is_file():
        sys.exit(f"error: '{args.run_dir}' is not a BehaviorLM run folder: manifest.json is missing")
    try:
        out = export(args.run_dir, args.output, args.merge)
    except (FileExistsError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    print(f"exported {'merged model' if args.merge else 'adapter'} -> {out}")
