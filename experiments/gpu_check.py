"""The checks that need a GPU, as one short script for a lent GPU machine (a few minutes on one H100).

    python -m experiments.gpu_check                              # CUDA: both models, 1 and (if present) 2 GPUs
    python -m experiments.gpu_check --device cpu --models tiny_random --skip-runs   # a dry run of the code path

1. Kernels (issue #9): for each model in bf16 on the device — exact trie ranking and constrained beam scoring
   of NYC/synthetic test prompts (samples/s) and LoRA training steps (samples/s), with peak GPU memory.
2. Pipeline (issue #6): `progressive` end to end through `run.py` with 1 process and, when 2+ GPUs are visible,
   with `launcher=torchrun launcher.nproc_per_node=2` (NCCL): wall time, test accuracy, peak memory per run.
Everything lands in one JSON file (default results/gpu_check.json) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from behaviorlm.data.dataset import load_dataset
from behaviorlm.pipeline import build_behavior_model
from behaviorlm.training import answer_loss_sum, collate
from behaviorlm.utils import PROJECT_ROOT, atomic_write_json, compose_config

MODEL_ARGS = {
    "tiny_random": ["model=tiny_random", "data=synthetic"],
    "smollm2_135m": ["experiment=quick_cpu"],
}


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_check(model_name: str, device_name: str, samples: int, train_steps: int) -> dict:
    cfg = compose_config([*MODEL_ARGS[model_name], f"device={device_name}", "logger=none", "aux_ratio=0",
                          "model.precision=bf16"])
    dataset = load_dataset(cfg)
    bm, _ = build_behavior_model(cfg, dataset, [])
    device = bm.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    test = dataset.test[:samples]
    result = {"model": model_name, "device": str(device), "samples": len(test)}
    for mode in ("exact", "beam"):
        bm.scoring_mode = mode
        bm.scores(test[:2])  # warm-up (kernel selection, allocator)
        sync(device)
        started = time.perf_counter()
        bm.scores(test)
        sync(device)
        result[f"{mode}_samples_per_s"] = len(test) / (time.perf_counter() - started)
    examples = bm.behavior_examples(dataset.train[:cfg.train.batch_size * train_steps])
    params = [p for p in bm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batches = [collate(examples[i:i + cfg.train.batch_size], bm.tokenizer.pad_token_id, device)
               for i in range(0, len(examples), cfg.train.batch_size)]
    bm.model.train()
    for index, batch in enumerate(batches):
        if index == 1:  # the first step is the warm-up
            sync(device)
            started = time.perf_counter()
        loss, tokens = answer_loss_sum(bm.model, batch, bm.amp_dtype, device)
        (loss / tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    timed_samples = sum(b[0].shape[0] for b in batches[1:])
    result["train_samples_per_s"] = timed_samples / (time.perf_counter() - started) if len(batches) > 1 else None
    result["peak_memory_gb"] = peak_memory_gb(device)
    return result


def pipeline_check(model_name: str, device_name: str, processes: int, out_root: Path) -> dict:
    out = out_root / f"{model_name}_{processes}proc"
    args = [*MODEL_ARGS[model_name], f"device={device_name}", "logger=none", "cache=off", "stage_order=progressive",
            f"hydra.run.dir={out}"]
    if model_name == "tiny_random":
        args.append("debug=fast")
    if processes > 1:
        args += ["launcher=torchrun", f"launcher.nproc_per_node={processes}"]
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(PROJECT_ROOT / "run.py"), *args], cwd=PROJECT_ROOT,
                               capture_output=True, text=True)
    result = {"model": model_name, "processes": processes, "seconds": time.perf_counter() - started,
              "returncode": completed.returncode}
    if completed.returncode != 0:
        result["error"] = completed.stderr[-2000:]
        return result
    metrics = json.loads((out / "metrics.json").read_text())
    runtime = json.loads((out / "run_info.json").read_text())
    result.update({"test_acc_overall": metrics["test/acc_overall"], "n_processes": metrics["n_processes"],
                   "peak_memory_gb": runtime.get("peak_gpu_memory_gb"),
                   **{k: v for k, v in runtime.items() if k.endswith("train_samples_per_s")}})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(MODEL_ARGS), choices=list(MODEL_ARGS))
    parser.add_argument("--samples", type=int, default=32, help="test prompts timed per scoring mode")
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--skip-runs", action="store_true", help="kernels only, no end-to-end pipeline runs")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "gpu_check.json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is visible (use --device cpu for a dry run)")

    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "gpus": torch.cuda.device_count() if args.device == "cuda" else 0, "torch": torch.__version__,
              "command": " ".join(["python -m experiments.gpu_check", *sys.argv[1:]]), "kernels": [], "runs": []}
    for model in args.models:
        report["kernels"].append(kernel_check(model, args.device, args.samples, args.train_steps))
        print(json.dumps(report["kernels"][-1]), flush=True)
    if not args.skip_runs:
        counts = [1, 2] if report["gpus"] >= 2 else [1]
        for model in args.models:
            for processes in counts:
                report["runs"].append(pipeline_check(model, args.device, processes, args.out.parent / "gpu_runs"))
                print(json.dumps({k: v for k, v in report["runs"][-1].items() if k != "error"}), flush=True)
    atomic_write_json(args.out, report)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
