"""The bf16 matmuls of a SmolLM2 training step (8 rows of about 120 tokens: M = 896-976; K, N = 576, 1536, 192)
against the 2048^3 GEMM the bench divides by, on this CPU (2026-11-27): forward x @ W^T as F.linear runs it and with
W^T stored contiguous, and the backward's grad @ W. 20 timed calls each after two warm-ups. Run from the repo root:
    .venv/bin/python -m tools.probes.train_step.gemm_shapes > results/train_step/gemm_shapes.log"""
import os
import time

import torch

torch.manual_seed(0)


def seconds(fn, repeat=20):
    fn(), fn()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


bf16 = torch.bfloat16
big = torch.randn(2048, 2048, dtype=bf16)
print(f"GEMM 2048^3: {2 * 2048 ** 3 / seconds(lambda: big @ big, 5) / 1e9:.0f} GFLOP/s")
for m in (976, 896):
    for k, n in ((576, 1536), (1536, 576), (576, 576), (576, 192)):
        x, w, grad = torch.randn(m, k, dtype=bf16), torch.randn(n, k, dtype=bf16), torch.randn(m, n, dtype=bf16)
        w_t = w.t().contiguous()
        flop = 2 * m * k * n
        rates = [flop / seconds(fn) / 1e9 for fn in (lambda: torch.nn.functional.linear(x, w), lambda: x @ w_t,
                                                      lambda: grad @ w)]
        print(f"M {m} K {k} N {n}: F.linear(x, W) {rates[0]:.0f}, x @ W^T contiguous {rates[1]:.0f}, "
              f"backward grad @ W {rates[2]:.0f} GFLOP/s")
print(f"GEMM 2048^3 again: {2 * 2048 ** 3 / seconds(lambda: big @ big, 5) / 1e9:.0f} GFLOP/s; "
      f"threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}")
