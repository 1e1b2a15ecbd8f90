"""The one experiment function behind `run.py`: data -> model -> stages of `stage_order` -> held-out test.

    cfg -> validate -> load dataset -> load backbone + LoRA -> for stage in STAGE_PLANS[stage_order]: run it,
    validate -> test -> metrics.json (+ per_behavior.csv, selection.json, the adapter and a manifest) -> W&B

Every number it prints comes from scoring held-out samples (validation after each stage, test at the end).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from behaviorlm.config import validate_config
from behaviorlm.data.conversations import load_conversations
from behaviorlm.data.dataset import BehaviorDataset, load_dataset
from behaviorlm.metrics import format_results_table
from behaviorlm.models import add_lora, autocast_dtype, load_backbone, resolve_device
from behaviorlm.prompts import PromptBuilder, render_instruction
from behaviorlm.stages import (STAGE_PLANS, BehaviorModel, a_tuning_set, difficulty_selection, random_balanced,
                               tune)
from behaviorlm.tracking import Tracker, tracking
from behaviorlm.utils import atomic_write_json, atomic_write_text, seed_everything

log = logging.getLogger(__name__)


def tokenizer_corpus(dataset: BehaviorDataset, conversations, limit: int = 400) -> list[str]:
    """Texts a tiny in-process tokenizer is trained on: names, rendered prompts and some conversations."""
    texts = list(dataset.vocab.names)
    for sample in dataset.train[:limit]:
        for fmt in ("list", "sentence", "log"):
            texts.append(render_instruction(sample.history, sample.history_times, fmt))
    texts += [m["content"] for conv in conversations[:50] for m in conv]
    return texts


def build_behavior_model(cfg: DictConfig, dataset: BehaviorDataset, conversations) -> tuple[BehaviorModel, Any]:
    """Backbone + fresh LoRA adapter + prompts + scorer. Returns it with the folder the backbone came from."""
    device = resolve_device(cfg.device)
    model, tokenizer, folder = load_backbone(cfg.model, cfg.paths.model_cache_dir, device, seed=cfg.seed,
                                             tokenizer_texts=tokenizer_corpus(dataset, conversations))
    if folder is None:  # built in-process: keep the backbone with the run, before LoRA wraps its modules
        folder = str(Path(cfg.paths.output_dir) / "base_model")
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    model = add_lora(model, cfg.model.lora)
    prompts = PromptBuilder(tokenizer, cfg.prompt.formats, cfg.prompt.use_chat_template, cfg.prompt.system_prompt,
                            seed=cfg.seed)
    bm = BehaviorModel.build(model, tokenizer, prompts, dataset.vocab, device,
                             autocast_dtype(cfg.model.precision, device), cfg.scoring.batch_size, cfg.scoring.mode)
    return bm, folder


def save_run_artifacts(cfg: DictConfig, bm: BehaviorModel, base_folder: str, out: Path) -> None:
    """What `behaviorlm predict` needs to reuse this run: adapter, vocabulary, prompt settings, model reference."""
    bm.model.save_pretrained(out / "adapter")
    if Path(base_folder) == out / "base_model":
        base_folder = "base_model"  # relative: the run folder can be moved
    manifest = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "base_model_folder": base_folder,
        "prompt": {**OmegaConf.to_container(cfg.prompt, resolve=True), "seed": cfg.seed},
        "history_len": cfg.data.history_len,
        "vocab": bm.vocab.to_dict(),
    }
    atomic_write_json(out / "manifest.json", manifest)


def run_behaviorlm(cfg: DictConfig, dataset: BehaviorDataset, tracker: Tracker, out: Path) -> dict[str, Any]:
    conversations = load_conversations(cfg.aux.path, cfg.aux.format) if cfg.aux_ratio > 0 else []
    bm, base_folder = build_behavior_model(cfg, dataset, conversations)
    k = cfg.scoring.top_k
    val_for_stopping = dataset.val[:cfg.train.val_samples_for_early_stopping]
    metrics: dict[str, Any] = {}
    selection = None

    def log_step(stage: str):
        def on_step(record: dict) -> None:
            tracker.log({f"{stage}/train/loss": record["loss"], f"{stage}/train/lr": record["lr"]})
        return on_step

    for stage in STAGE_PLANS[cfg.stage_order]:
        started = time.perf_counter()
        report: dict[str, Any] = {}
        if stage in ("a_tuning", "joint_tuning", "b_tuning"):
            if stage == "a_tuning":
                examples, report = a_tuning_set(bm, dataset.train, conversations, cfg.aux_ratio,
                                                cfg.aux.max_response_tokens, cfg.seed)
                stage_cfg = cfg.train.a_tuning
            elif stage == "joint_tuning":
                examples, stage_cfg = bm.behavior_examples(dataset.train), cfg.train.a_tuning
            else:
                chosen = [dataset.train[i] for i in selection.indices]
                examples, stage_cfg = bm.behavior_examples(chosen), cfg.train.b_tuning
            report["n_examples"] = len(examples)
            history = tune(bm, examples, stage_cfg, cfg.train, val_for_stopping, cfg.seed, stage, log_step(stage))
            report["epochs"] = len(history)
            if history:
                report["final_train_loss"] = history[-1].train_loss
                report["train_samples_per_s"] = history[-1].samples_per_s
        elif stage == "difficulty_selection":
            selection, report = difficulty_selection(bm, dataset.train, cfg.samples_per_behavior, cfg.selection,
                                                     cfg.seed)
        elif stage == "random_balanced":
            selection, report = random_balanced(bm, dataset.train, cfg.samples_per_behavior, cfg.seed)
        report["seconds"] = time.perf_counter() - started
        if selection is not None and stage in ("difficulty_selection", "random_balanced"):
            atomic_write_json(out / "selection.json", {"per_behavior": selection.per_behavior,
                                                       "tiers": selection.tier_counts()})
        stage_metrics = {f"{stage}/{key}": value for key, value in report.items()}
        if stage not in ("difficulty_selection", "random_balanced") and dataset.val:
            val_metrics, _ = bm.evaluate(dataset.val, k, progress=f"validation after {stage}")
            stage_metrics.update({f"{stage}/val/{key}": value for key, value in val_metrics.items()})
        metrics.update(stage_metrics)
        tracker.log(stage_metrics)
        log.info("%s done in %.1fs: %s", stage, report["seconds"],
                 {k: v for k, v in stage_metrics.items() if "acc_overall" in k or "n_" in k})

    started = time.perf_counter()
    test_metrics, table = bm.evaluate(dataset.test, k, progress="test")
    metrics["test/seconds"] = time.perf_counter() - started
    metrics.update({f"test/{key}": value for key, value in test_metrics.items()})
    atomic_write_text(out / "per_behavior.csv", table.to_csv(index=False))
    tracker.table("test/per_behavior", table)
    save_run_artifacts(cfg, bm, base_folder, out)
    return metrics


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment job; returns the flat metrics also written to `<output_dir>/metrics.json`."""
    validate_config(cfg)
    seed_everything(cfg.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = load_dataset(cfg)
    vocab = dataset.vocab
    with tracking(cfg, job_type=cfg.stage_order if cfg.method == "behaviorlm" else cfg.method) as tracker:
        if cfg.method == "behaviorlm":
            metrics = run_behaviorlm(cfg, dataset, tracker, out)
        else:
            from behaviorlm.baselines import run_baseline

            metrics = run_baseline(cfg, dataset, out)
        metrics.update({
            "method": cfg.method, "stage_order": cfg.stage_order, "model": cfg.model.name, "data": cfg.data.name,
            "seed": cfg.seed, "aux_ratio": cfg.aux_ratio, "anchor_threshold": cfg.anchor_threshold,
            "samples_per_behavior": cfg.samples_per_behavior,
            "n_train": len(dataset.train), "n_val": len(dataset.val), "n_test": len(dataset.test),
            "n_anchor_behaviors": len(vocab.anchors), "n_tail_behaviors": len(vocab.tail),
            "n_behaviors": len(vocab.names), "seconds_total": time.perf_counter() - started, "status": "completed",
        })
        tracker.summary(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    print(f"\n{cfg.method} / {cfg.stage_order} / {cfg.model.name} on {cfg.data.name} "
          f"(test: {len(dataset.test)} samples)\n{format_results_table(metrics)}\nmetrics: {out / 'metrics.json'}")
    return metrics


def load_metrics(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
