"""The checks that need a GPU, as one short script for a lent GPU machine (a few minutes on one H100).

    python -m tools.gpu.gpu_check                              # CUDA: both models, 1 and (if present) 2 GPUs
    python -m tools.gpu.gpu_check --device cpu --models tiny_random --skip-runs   # a dry run of the code path
    python -m tools.gpu.gpu_check --models --shapes qwen2_5_1_5b --skip-runs     # training MFU only

1. Kernels (issue #9): for each model in bf16 on the device — exact trie ranking and constrained beam scoring
   of NYC/synthetic test prompts (samples/s) and LoRA training steps (samples/s), with peak GPU memory.
2. Training MFU (issue #18, `tools/gpu/gpu_shapes.py`) of randomly initialised models of real shapes
   (SmolLM2-135M, Qwen2.5-1.5B; speed needs no checkpoint): our LoRA step (`answer_loss_sum`, AdamW) on full rows
   of random tokens, model FLOPs counted as bench.py counts them (4 x non-embedding parameters x tokens: forward +
   backward through activations, frozen weights take no weight gradients; attention scores not counted, so MFU is
   a lower bound), divided by the bf16 GEMM peak measured in the same run (8192^3 matmul) and by the card's nominal
   dense bf16 peak.
3. Pipeline (issue #6): `progressive` end to end through `run.py` with 1 process and, when 2+ GPUs are visible,
   with `launcher=torchrun launcher.nproc_per_node=2` (NCCL): wall time, test accuracy, peak memory per run.
Everything lands in one JSON file (default results/gpu_check.json) and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from behaviorlm.training import answer_loss_sum, collate
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT, atomic_write_json, compose_config
from tools.gpu.gpu_shapes import SHAPES, gemm_peak, padding_check, peak_memory_gb, shape_check, sync

MODEL_ARGS = {
    "tiny_random": ["model=tiny_random", "data=synthetic"],
    "smollm2_135m": ["experiment=quick_cpu"],
}


def nan_probe(device_name: str, steps: int = 24) -> dict:
    """Where does a non-finite loss come from with the real SmolLM2? Weights after loading, zero-shot scores, then
    real left-padded training steps (batch 32, the A-Tuning learning rate) per weight precision and attention kernel,
    each stopping at its first non-finite loss or gradient."""
    import numpy as np

    cfg, dataset, bm = tuned_behavior_model(["experiment=quick_cpu", f"device={device_name}", "aux_ratio=0",
                                             "train.batch_size=32"])
    base = bm.model.get_base_model()
    report = {"weight_dtype": str(next(base.parameters()).dtype), "amp_dtype": str(bm.amp_dtype),
              "nonfinite_weights": [n for n, p in base.named_parameters() if not torch.isfinite(p).all()][:10]}
    val = dataset.val[:48]
    scores = bm.scores(val)
    names = list(bm.vocab.names)
    report["zero_shot_scores_nan_free"] = not bool(np.isnan(scores).any())
    report["zero_shot_val_acc"] = float(np.mean([names[i] == s.target for i, s in zip(scores.argmax(1), val)]))
    examples = bm.behavior_examples(dataset.train[:32 * steps])
    steps = min(steps, len(examples) // 32)
    initial = {n: p.detach().clone() for n, p in bm.model.named_parameters() if p.requires_grad}
    report["training"] = []
    for weights, attention in (("model", "sdpa"), ("model", "eager"), ("fp32", "sdpa")):
        with torch.no_grad():
            for n, p in bm.model.named_parameters():
                if n in initial:
                    p.copy_(initial[n])
        if weights == "fp32":
            bm.model.float()
        base.set_attn_implementation(attention)
        optimizer = torch.optim.AdamW([p for p in bm.model.parameters() if p.requires_grad], lr=2e-4)
        bm.model.train()
        run = {"weights": str(next(base.parameters()).dtype), "attention": attention, "losses": [], "first_bad": None}
        for step in range(steps):
            batch = collate(examples[32 * step:32 * (step + 1)], bm.tokenizer.pad_token_id, device=bm.device)
            loss, tokens = answer_loss_sum(bm.model, batch, bm.amp_dtype, bm.device)
            (loss / tokens).backward()
            bad_grads = [n for n, p in bm.model.named_parameters()
                         if p.grad is not None and not torch.isfinite(p.grad).all()]
            run["losses"].append(round(float(loss / tokens), 4))
            if not torch.isfinite(loss) or bad_grads:
                run["first_bad"] = {"step": step, "loss": float(loss), "tokens": tokens, "bad_grads": bad_grads[:4],
                                    "width": int(batch[0].shape[1]), "pad_share": float(1 - batch[1].float().mean())}
                break
            torch.nn.utils.clip_grad_norm_([p for p in bm.model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        report["training"].append(run)
        print(json.dumps(run), flush=True)
    bm.model.eval()
    return report


def random_weight_folder(model_name: str, source_dir: Path) -> Path:
    """The model's cache folder filled with random weights (seed 0) of the config in `source_dir`, beside its
    tokenizer files: the pipeline's own loading, prompts and trie on a machine that cannot carry the checkpoint.
    Exact ranking costs the same FLOPs whatever the weights; the bounded beam's second round does not."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = compose_config(MODEL_ARGS[model_name])
    target = Path(cfg.paths.model_cache_dir) / cfg.model.name
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source_dir)).save_pretrained(target)
    for name in source_dir.iterdir():
        if name.is_file() and name.name != "config.json" and not name.name.endswith(".safetensors"):
            shutil.copy(name, target / name.name)
    return target


def kernel_check(model_name: str, device_name: str, samples: int, train_steps: int,
                 scoring_batches: list[int] | None = None, train_batch: int | None = None) -> dict:
    """Scoring prompts/s per mode and per prompts-per-forward (`scoring_batches`, default the config's), then
    LoRA training samples/s, all through the pipeline's own BehaviorModel."""
    overrides = [f"train.batch_size={train_batch}"] if train_batch else []
    cfg, dataset, bm = tuned_behavior_model([*MODEL_ARGS[model_name], f"device={device_name}", "aux_ratio=0",
                                             "model.precision=bf16", *overrides])
    device = bm.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    test = dataset.test[:samples]
    result = {"model": model_name, "device": str(device), "samples": len(test), "scoring": []}
    for batch_size in scoring_batches or [bm.scorer.batch_size]:
        bm.scorer.batch_size = batch_size
        for mode in ("exact", "beam"):
            bm.scoring_mode = mode
            bm.scores(test[:batch_size])  # warm-up (kernel selection, allocator)
            sync(device)
            started = time.perf_counter()
            bm.scores(test)
            sync(device)
            rate = len(test) / (time.perf_counter() - started)
            result["scoring"].append({"mode": mode, "prompts_per_forward": batch_size, "prompts_per_s": rate,
                                      "peak_memory_gb": peak_memory_gb(device)})
            result[f"{mode}_samples_per_s"] = max(rate, result.get(f"{mode}_samples_per_s", 0.0))
            print(json.dumps(result["scoring"][-1]), flush=True)
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
    result["train_batch_size"] = cfg.train.batch_size
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
    parser.add_argument("--models", nargs="*", default=list(MODEL_ARGS), choices=list(MODEL_ARGS),
                        help="real models: scoring and training speed through the pipeline's own code")
    parser.add_argument("--shapes", nargs="*", default=[], choices=list(SHAPES),
                        help="randomly initialised real shapes: training MFU")
    parser.add_argument("--nan-probe", action="store_true",
                        help="real SmolLM2: finite weights, zero-shot scores and training steps per precision/kernel?")
    parser.add_argument("--probe-steps", type=int, default=24, help="training steps per --nan-probe setting")
    parser.add_argument("--padding-check", action="store_true",
                        help="is a left-padded training step finite, per attention kernel and precision?")
    parser.add_argument("--shape-batch", type=int, default=None,
                        help="rows per training step of a shape (default: the shape's own, see SHAPES)")
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per row of a shape's training step")
    parser.add_argument("--shape-variants", nargs="*", default=["default"],
                        help="per shape, the LoRA steps to time: '+'-joined nodropout, compile, bNN (see shape_check)")
    parser.add_argument("--samples", type=int, default=32, help="test prompts timed per scoring mode")
    parser.add_argument("--scoring-batches", type=int, nargs="*", default=None,
                        help="prompts per scoring forward to time (default: the config's scoring.batch_size)")
    parser.add_argument("--train-batch", type=int, default=None, help="rows per timed training step of --models")
    parser.add_argument("--random-weights", type=Path, default=None, metavar="DIR",
                        help="--models load random weights of the config in DIR, with DIR's tokenizer (speed only)")
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--skip-runs", action="store_true", help="kernels only, no end-to-end pipeline runs")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "gpu_check.json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device is visible (use --device cpu for a dry run)")

    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "gpus": torch.cuda.device_count() if args.device == "cuda" else 0, "torch": torch.__version__,
              "command": " ".join(["python -m tools.gpu.gpu_check", *sys.argv[1:]]), "kernels": [], "runs": [],
              "shapes": []}
    if args.padding_check:
        report["padding"] = padding_check(args.device)
    if args.nan_probe:
        report["nan_probe"] = nan_probe(args.device, args.probe_steps)
        print(json.dumps({k: v for k, v in report["nan_probe"].items() if k != "training"}), flush=True)
    if args.random_weights:  # a cache of its own: the real checkpoint's folder is never overwritten
        os.environ["BEHAVIORLM_CACHE"] = tempfile.mkdtemp(prefix="gpu_check_random_weights_")
    for model in args.models:
        if args.random_weights:
            print(f"random weights in {random_weight_folder(model, args.random_weights)}", flush=True)
        report["kernels"].append(kernel_check(model, args.device, args.samples, args.train_steps,
                                              args.scoring_batches, args.train_batch))
        report["kernels"][-1]["weights"] = "random (real config and tokenizer)" if args.random_weights else "real"
        print(json.dumps(report["kernels"][-1]), flush=True)
        atomic_write_json(args.out, report)
    if args.shapes:
        # the shape steps compute in bf16 on a GPU and in fp32 on a CPU (unless a variant adds autocast)
        device = torch.device(args.device)
        peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        report["gemm_peak_dtype"] = str(peak_dtype)
        report["bf16_gemm_peak_flop_per_s"] = peak = gemm_peak(device, dtype=peak_dtype)
        for shape in args.shapes:
            for variant in args.shape_variants:
                report["shapes"].append(shape_check(shape, args.device, args.shape_batch, args.seq_len,
                                                    args.train_steps, peak, variant))
                print(json.dumps(report["shapes"][-1]), flush=True)
                atomic_write_json(args.out, report)  # a variant that outlives the call's time keeps the others'
                torch._dynamo.reset()  # drop a compiled variant's graphs and the model they hold
                if args.device == "cuda":
                    torch.cuda.empty_cache()
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
