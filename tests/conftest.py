import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (make test) the workers split the cores instead of each running an OpenMP thread on every core:
# two torch processes that oversubscribe 2 cores slow each other 5-10x. Set before torch is imported, so the worker
# and every run it starts (they inherit the environment) keep to their share.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _workers))
# Tests never share stage-cache entries with the user's runs (or with an earlier test session), and leave none behind.
os.environ["BEHAVIORLM_STAGE_CACHE"] = tempfile.mkdtemp(prefix="behaviorlm-stage-cache-")
atexit.register(shutil.rmtree, os.environ["BEHAVIORLM_STAGE_CACHE"], ignore_errors=True)


@pytest.fixture
def compose():
    from behaviorlm.utils import compose_config

    def _compose(*overrides, output_dir=None):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose_config(list(overrides) + extra)

    return _compose


@pytest.fixture
def hand_log() -> pd.DataFrame:
    """Two users; u1 has 6 events, u2 has 3 (too short for min_history=3 targets after the 3rd)."""
    rows = [
        ("u1", "2024-01-01 08:00", "Home", "Residence"),
        ("u1", "2024-01-01 09:00", "Gym", "Sport"),
        ("u1", "2024-01-01 12:00", "Cafe", "Food"),
        ("u1", "2024-01-02 08:00", "Home", "Residence"),
        ("u1", "2024-01-02 10:00", "Office", "Work"),
        ("u1", "2024-01-03 18:00", "Bar", "Food"),
        ("u2", "2024-01-01 07:00", "Cafe", "Food"),
        ("u2", "2024-01-01 08:00", "Office", "Work"),
        ("u2", "2024-01-04 09:00", "Gym", "Sport"),
    ]
    return pd.DataFrame(rows, columns=["user_id", "timestamp", "behavior", "category"])


def run_entrypoint(args, cwd=ROOT, timeout=600, env=None):
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
