"""Two levers on the eager training step that did not pay, in interleaved rounds with their losses (2026-11-27):
the output layer in fp32 on the answer rows (instead of autocast casting the 49k x 576 head to bf16 every step),
and right padding with no padding mask, so that attention is plain causal (SDPA's causal kernel, or eager), the
answer rows gathered by column. SmolLM2-135M with results/bench_adapter, the bench's 6 length-grouped batches of 8
real NYC examples, bf16 autocast, LoRA dropout 0. Run from the repo root with nothing else running:
    .venv/bin/python -m tools.probes.train_step.padding_and_head > results/train_step/padding_and_head.log"""
import os
import time

import numpy as np
import torch

load_at_start = os.getloadavg()[0]
from tools.probes.train_step.step_setup import bench_step_setup
from behaviorlm.models import autocast, attention_implementation
from behaviorlm.models import fp32_output_layer
from behaviorlm.training import answer_loss_sum, collate, trainable_state

bm, examples, _, _ = bench_step_setup(6)
exs = [examples[i:i + 8] for i in range(0, len(examples), 8)]  # the bench's 6 batches, as example lists
pad = bm.tokenizer.pad_token_id; dev = bm.device; amp = bm.amp_dtype
left = [collate(e, pad, dev) for e in exs]

def right_collate(examples):
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    ends = []; starts = []
    for r, e in enumerate(examples):
        seq = list(e.prompt_ids) + list(e.answer_ids)
        ids[r, :len(seq)] = torch.tensor(seq)
        starts.append(len(e.prompt_ids) - 1); ends.append(len(seq) - 1)  # predicting positions [start, end)
    lo, hi = min(starts), max(ends)
    labels = torch.full((len(examples), hi - lo), -100, dtype=torch.long)
    for r, e in enumerate(examples):
        labels[r, starts[r] - lo: ends[r] - lo] = torch.tensor(e.answer_ids)
    return ids, torch.arange(lo, hi), labels
right = [right_collate(e) for e in exs]

def loss_left(model, b, head32):
    with attention_implementation(model, "eager"), fp32_output_layer(model, head32):
        l, n = answer_loss_sum(model, b, amp, dev)
    return l / n

def loss_right(model, b, kernel):
    ids, cols, labels = b
    with attention_implementation(model, kernel), fp32_output_layer(model, True), autocast(dev, amp):
        logits = model(input_ids=ids, logits_to_keep=cols, use_cache=False).logits
    l = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum")
    return l / int((labels != -100).sum())

model = bm.model
variants = {"left eager (now)": (lambda b: loss_left(model, b, False), left),
            "left eager fp32 head": (lambda b: loss_left(model, b, True), left),
            "right sdpa causal fp32 head": (lambda b: loss_right(model, b, "sdpa"), right),
            "right eager fp32 head": (lambda b: loss_right(model, b, "eager"), right)}
start = {k: v.detach().clone() for k, v in trainable_state(model).items()}
params = [p for p in model.parameters() if p.requires_grad]
model.train()
for name, (fn, bs) in variants.items():
    model.load_state_dict(start, strict=False)
    opt = torch.optim.AdamW(params, lr=1e-4); losses = []
    for b in bs:
        loss = fn(b); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); losses.append(round(loss.item(), 5))
    print("losses,", name, losses)
model.load_state_dict(start, strict=False)
opt = torch.optim.AdamW(params, lr=1e-4)
def runner(fn, bs):
    def go():
        for b in bs:
            fn(b).backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return go
fns = {k: runner(*v) for k, v in variants.items()}
for f in fns.values(): f()
secs = {k: [] for k in fns}
for r in range(int(os.environ.get("ROUNDS", 4))):
    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
        t = time.perf_counter(); fns[k](); secs[k].append(time.perf_counter() - t)
print(f"load average at start {load_at_start:.2f}")
for k, v in secs.items(): print(f"{k}: median {np.median(v):.2f} s / 6 steps {[round(x,2) for x in v]}")
print(f"load average at end {os.getloadavg()[0]:.2f}; threads {torch.get_num_threads()}; torch {torch.__version__}")
