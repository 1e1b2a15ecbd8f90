"""Where a forward's time goes on this CPU (2026-11-27): the figures behind docs/speed.md's "The beam at 1.4x a prompt
forward". SmolLM2-135M with results/bench_adapter, bf16 autocast, fp32 output layer, batch 1, random token ids;
each figure the median of 5 interleaved rounds of 5 calls. Run from the repo root with nothing else running:
    .venv/bin/python -m tools.probes.beam_agreement.forward_costs > results/beam_agreement/forward_costs.log"""
import json, os, time

import numpy as np
import torch

from behaviorlm.models import autocast, fp32_output_layer
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT

load_at_start = os.getloadavg()[0]
cfg, _, bm = tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0"], PROJECT_ROOT / "results" / "bench_adapter")
model = bm.model.eval()
ids = torch.randint(0, 40000, (1, 126))
head = model.get_output_embeddings().weight


def forward(tokens: int, keep: int):
    with torch.no_grad(), fp32_output_layer(model), autocast(bm.device, bm.amp_dtype):
        model(input_ids=ids[:, :tokens], logits_to_keep=keep)


cases = {f"forward, {t} tokens, logits of {k} row(s)": (lambda t=t, k=k: forward(t, k))
         for t, k in ((1, 1), (12, 1), (111, 1), (126, 1), (126, 16))}
for rows in (1, 16, 60):
    hidden = torch.randn(rows, head.shape[1])
    cases[f"fp32 output layer alone, {rows} row(s)"] = lambda h=hidden: torch.nn.functional.linear(h, head)
for fn in cases.values():
    fn()
seconds = {name: [] for name in cases}
with torch.no_grad():
    for _ in range(5):
        for name, fn in cases.items():
            started = time.perf_counter()
            for _ in range(5):
                fn()
            seconds[name].append((time.perf_counter() - started) / 5)
print(json.dumps({"ms": {k: round(1000 * float(np.median(v)), 2) for k, v in seconds.items()},
                  "load_average_1min_at_start": load_at_start, "threads": torch.get_num_threads(),
                  "torch": torch.__version__}, indent=1))
