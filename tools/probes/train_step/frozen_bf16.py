"""Frozen projection weights stored in bf16 on CPU against fp32 ones under bf16 autocast: the same training step
timed in interleaved rounds, and the losses of both compared (2026-11-27). SmolLM2-135M with results/bench_adapter,
6 length-grouped batches of real NYC examples (the bench's), LoRA dropout as configured, eager attention.
Autocast re-casts every frozen fp32 weight to bf16 in each forward and again for the backward; stored in bf16 the
cast is a no-op. Run from the repo root with nothing else running:
    .venv/bin/python -m tools.probes.train_step.frozen_bf16 > results/train_step/frozen_bf16.log"""
import copy
import os
import time

import numpy as np
import torch

from tools.probes.train_step.step_setup import bench_step_setup
from behaviorlm.training import trainable_state
from tools.bench.bench_training import without_lora_dropout

ROUNDS = int(os.environ.get("ROUNDS", 7))
load_at_start = os.getloadavg()[0]
bm, _, batches, objective = bench_step_setup(6)

fp32_model = bm.model
bf16_model = copy.deepcopy(fp32_model)
head = bf16_model.get_output_embeddings().weight
cast = 0
for name, module in bf16_model.named_modules():
    if isinstance(module, torch.nn.Linear) and "lora_" not in name and module.weight is not head:
        module.weight.data = module.weight.data.to(torch.bfloat16)
        cast += 1
print(f"frozen linear weights stored in bf16: {cast}")


def stepper(model):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def steps():
        for batch in batches:
            (objective.loss_sum(model, batch) / objective.count(batch)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return steps


# Same start, dropout off: the loss curves of the two storages over 6 optimizer steps.
start = {k: v.detach().clone() for k, v in trainable_state(fp32_model).items()}
curves = {}
for label, model in (("fp32", fp32_model), ("bf16", bf16_model)):
    model.load_state_dict(start, strict=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    losses = []
    with without_lora_dropout(model):
        for batch in batches:
            loss = objective.loss_sum(model, batch) / objective.count(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    curves[label] = losses
    model.load_state_dict(start, strict=False)
print("losses fp32:", [round(x, 6) for x in curves["fp32"]])
print("losses bf16:", [round(x, 6) for x in curves["bf16"]])
print("largest relative gap:", max(abs(a - b) / abs(a) for a, b in zip(curves["fp32"], curves["bf16"])))

fns = {"fp32 weights": stepper(fp32_model), "bf16 weights": stepper(bf16_model)}
for fn in fns.values():
    fn()
seconds = {name: [] for name in fns}
for r in range(ROUNDS):
    order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # alternate who goes first
    for name in order:
        started = time.perf_counter()
        fns[name]()
        seconds[name].append(time.perf_counter() - started)
for name, values in seconds.items():
    print(f"{name}: median {np.median(values):.2f} s per 6 steps; rounds {[round(v, 2) for v in values]}")
ratios = [a / b for a, b in zip(seconds["fp32 weights"], seconds["bf16 weights"])]
print(f"speed-up per round (fp32 time / bf16 time): {[round(r, 3) for r in ratios]}; median {np.median(ratios):.3f}")
print(f"load average at start {load_at_start:.2f}, at end {os.getloadavg()[0]:.2f}; threads {torch.get_num_threads()}")
