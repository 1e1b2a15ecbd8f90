"""One LoRA training step, changed one thing at a time: which attention kernel, LoRA dropout 0.05 or none.

    python -m tools.bench.train_variants            # results/train_variants.json (about 2 minutes on 2 cores)

The same 6 length-grouped batches of 8 real NYC examples (SmolLM2-135M, bf16 autocast, the loop's answer-token
objective) are trained under each variant; the second of two passes is timed. `make bench` measures the default
(eager attention on CPU, no LoRA dropout since 2026-11-26); this says what each of the two settings costs. The model
is built with LoRA dropout 0.05 (the default before) so that the dropout masks have something to cost.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from behaviorlm.training import AnswerTokenLoss
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT, atomic_write_json
from tools.bench.bench_training import grouped_train_batches, without_lora_dropout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "train_variants.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gemma3_270m")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    cfg, dataset, bm = tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0", "model.lora.dropout=0.05",
                                             *args.overrides])
    _, batches = grouped_train_batches(bm, dataset.train, cfg.train.batch_size, args.steps)  # the bench's batches
    optimizer = torch.optim.AdamW([p for p in bm.model.parameters() if p.requires_grad], lr=1e-4)
    bm.model.train()

    def seconds_per_step(kernel: str) -> float:
        objective = AnswerTokenLoss(bm.tokenizer.pad_token_id, bm.device, bm.amp_dtype, kernel)

        def steps():
            for batch in batches:
                (objective.loss_sum(bm.model, batch) / objective.count(batch)).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        steps()  # warm-up
        started = time.perf_counter()
        steps()
        return (time.perf_counter() - started) / len(batches)

    variants = {}
    for kernel in ("sdpa", "eager"):
        variants[f"{kernel}, lora dropout {cfg.model.lora.dropout}"] = seconds_per_step(kernel)
        with without_lora_dropout(bm.model):
            variants[f"{kernel}, no lora dropout"] = seconds_per_step(kernel)
    baseline = next(iter(variants.values()))  # SDPA with dropout: the defaults before eager attention on CPU
    report = {"seconds_per_step": variants,
              "speedup_vs_sdpa_with_dropout": {k: baseline / v for k, v in variants.items()},
              "batch_size": cfg.train.batch_size, "steps": len(batches), "model": cfg.model.name,
              "tokens": sum(int(b[1].sum()) for b in batches), "load_average_1min_at_start": load_at_start,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "command": "python -m tools.bench.train_variants " + " ".join(args.overrides)}
    atomic_write_json(args.out, report)
    for name, seconds in variants.items():
        print(f"{name:32s} {seconds:.3f} s/step  {baseline / seconds:.2f}x")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
