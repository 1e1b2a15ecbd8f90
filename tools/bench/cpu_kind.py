"""What kind of CPU this is for BehaviorLM: its bf16 matrix instructions and the GEMM rates that decide the precision.

    python -m tools.bench.cpu_kind          # -> results/cpu_kinds/<matrix ISA>_<family>_<model>.json

`model.precision=auto` trains and scores under bf16 autocast only where the CPU multiplies bf16 natively (AVX-512
with bf16, or AMX): on an AVX2-only CPU such as AMD Zen 3, oneDNN emulates bf16 GEMMs two orders of magnitude
slower than fp32, so auto runs plain fp32 there. This measures both rates on square GEMMs (2 threads, the median of
five calls after a warm-up) so that the choice can be checked on any machine.
"""

from __future__ import annotations

import os
import time

import torch

from behaviorlm.models import autocast_dtype, cpu_has_fast_bf16
from behaviorlm.utils import PROJECT_ROOT, atomic_write_json
from behaviorlm.hardware import cpu_family_model, machine, matrix_isa


def gemm_rate(size: int, dtype: torch.dtype, calls: int = 5) -> float:
    """FLOP/s of a size^3 matrix product in `dtype` (median of `calls`, after one warm-up call)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - started)
    return 2 * size ** 3 / sorted(seconds)[calls // 2]


def main() -> None:
    load = os.getloadavg()[0]
    report = {"command": "python -m tools.bench.cpu_kind", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "precision_auto_autocast": str(autocast_dtype("auto", torch.device("cpu")))}
    for size in (1024, 2048):
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if dtype == torch.bfloat16 and not cpu_has_fast_bf16() and size > 1024:
                continue  # an emulated 2048^3 bf16 product takes tens of seconds and says nothing new
            report[f"gemm_{name}_{size}_gflop_per_s"] = round(gemm_rate(size, dtype) / 1e9, 2)
    report["machine"] = machine(load)
    out = PROJECT_ROOT / "results" / "cpu_kinds" / (f"{matrix_isa()}_" + cpu_family_model().replace(" ", "_") +
                                                     ".json")
    atomic_write_json(out, report)
    print(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
