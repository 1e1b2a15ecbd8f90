"""torch.compile of each decoder layer ("regional" compilation: one graph, reused by all 30 layers) against the
eager training step, in interleaved rounds, with the losses of both from the same start (2026-11-27). SmolLM2-135M
with results/bench_adapter, length-grouped batches of 8 real NYC examples (the bench's), bf16 autocast, eager
attention, LoRA dropout 0 (the defaults). Run from the repo root with nothing else running (TORCHINDUCTOR_CACHE_DIR
set to an empty folder gives the cold compile time; a second run shows the warm one):
    .venv/bin/python -m tools.probes.train_step.compile > results/train_step/compile.log"""
import os
import time

import numpy as np
import torch

from tools.probes.train_step.step_setup import bench_step_setup
from behaviorlm.training import trainable_state

ROUNDS = int(os.environ.get("ROUNDS", 5))
load_at_start = os.getloadavg()[0]
bm, _, batches, objective = bench_step_setup(12)
timed_batches, fresh_batches = batches[:6], batches[6:]
model = bm.model
params = [p for p in model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=1e-4)
model.train()
layers = model.get_base_model().model.layers


def steps(batch_list, losses=None):
    for batch in batch_list:
        loss = objective.loss_sum(model, batch) / objective.count(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if losses is not None:
            losses.append(loss.item())


def use_compiled(on: bool):
    for layer, impl in zip(layers, compiled_impls):
        layer._compiled_call_impl = impl if on else None


start = {k: v.detach().clone() for k, v in trainable_state(model).items()}
eager_losses = []
steps(timed_batches, eager_losses)
model.load_state_dict(start, strict=False)
optimizer = torch.optim.AdamW(params, lr=1e-4)

started = time.perf_counter()
for layer in layers:
    layer.compile(dynamic=True)
compiled_impls = [layer._compiled_call_impl for layer in layers]
compiled_losses = []
steps(timed_batches[:1], compiled_losses)
print(f"first compiled step (compilation included): {time.perf_counter() - started:.1f} s")
started = time.perf_counter()
steps(timed_batches[1:], compiled_losses)
print(f"the next 5 steps, each a new sequence length: {time.perf_counter() - started:.1f} s")
print("losses eager:   ", [round(x, 5) for x in eager_losses])
print("losses compiled:", [round(x, 5) for x in compiled_losses])
print("largest relative gap:", round(max(abs(a - b) / abs(a) for a, b in zip(eager_losses, compiled_losses)), 5))

seconds = {"eager": [], "compiled": []}
for r in range(ROUNDS):
    for name in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
        use_compiled(name == "compiled")
        started = time.perf_counter()
        steps(timed_batches)
        seconds[name].append(time.perf_counter() - started)
for name, values in seconds.items():
    print(f"{name}: median {np.median(values):.2f} s per 6 steps; rounds {[round(v, 2) for v in values]}")
ratios = [e / c for e, c in zip(seconds["eager"], seconds["compiled"])]
print(f"speed-up per round (eager / compiled): {[round(r, 3) for r in ratios]}; median {np.median(ratios):.3f}")
use_compiled(True)
started = time.perf_counter()
steps(fresh_batches)
print(f"compiled, 6 batches of lengths not seen before {[b[0].shape[1] for b in fresh_batches]}: "
      f"{time.perf_counter() - started:.2f} s (no recompilation when near the rounds' medians)")
print(f"load average at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}; threads {torch.get_num_threads()}; "
      f"torch {torch.__version__}")
