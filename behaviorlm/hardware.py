"""What machine a measurement ran on: CPU model, family and matrix ISA (a 2-core Zen 3, Zen 4 and AMX Xeon differ
100x in bf16 speed), threads, load before and after, library versions. Every bench and study file records it."""

from __future__ import annotations

import os
import platform

import torch

from behaviorlm.models import cpu_has_fast_bf16


def cpu_flags() -> set[str]:
    try:
        return set(next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")))
    except (OSError, StopIteration):
        return set()


def cpu_family_model() -> str:
    """'family F model M' from /proc/cpuinfo: AMD's 'AMD EPYC' name alone does not tell Zen 3 (25/1) from Zen 4."""
    fields = {}
    try:
        for line in open("/proc/cpuinfo"):
            key = line.split(":", 1)[0].strip()
            if key in ("cpu family", "model") and key not in fields:
                fields[key] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def matrix_isa() -> str:
    """The CPU's bf16 matrix instructions: amx_bf16 (Intel AMX), avx512_bf16 (e.g. AMD Zen 4) or none (AVX2)."""
    flags = cpu_flags()
    return next((isa for isa in ("amx_bf16", "avx512_bf16") if isa in flags), "none")


def machine_kind() -> dict:
    """The kind of machine a result was computed on: CPU model, family and matrix ISA, native bf16, threads, GPU."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cpu_family_model": cpu_family_model(), "matrix_isa": matrix_isa(),
            "bf16_native": cpu_has_fast_bf16(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine(load_at_start: float) -> dict:
    # The load average says whether anything else shared the cores during the run.
    return {**machine_kind(), "torch": torch.__version__, "load_average_1min_at_start": load_at_start,
            "load_average_1min_at_end": os.getloadavg()[0], "python": platform.python_version()}
