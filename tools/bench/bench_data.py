"""The data layer's cost at the sizes users bring: reading a behavior log against loading it as a dataset.

    make bench-data                                # 1M and 10M events -> results/bench_data.json
    python -m tools.bench.bench_data --sizes 1M    # one size

For each size a synthetic log is written once as CSV (50 events per user on average; 300 behaviors with a Zipf
popularity; ISO timestamps over 2024; the shape of the data-layer issue: 1M events = 20,000 users), then two
fresh processes time, each on a cold interpreter:
  * `seconds_read_file`: plain `pd.read_csv` of the file (the floor any loader pays);
  * `seconds_load_dataset`: `behaviorlm.data.dataset.load_dataset` with `data=csv` as a run calls it (parsing and
    checking every field, samples, chronological split, vocabulary, the `nyc_cpu` preset's subsample sizes:
    2,000 train / 200 validation / 600 stratified test samples), and its peak resident memory.
`load_vs_read_ratio` = the two times' ratio. Goals: <= 10 at 1M events, the 10M log within 8 GB.
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

import numpy as np

from behaviorlm.utils import PROJECT_ROOT, atomic_write_json

SIZES = {"1M": 1_000_000, "10M": 10_000_000}
EVENTS_PER_USER = 50  # 1M events: 20,000 users; 10M: 200,000 users
N_BEHAVIORS = 300
CAPS = ["data.max_train_samples=2000", "data.max_val_samples=200", "data.max_test_samples=600",
        "data.test_sampling=stratified"]


def write_log(path: Path, n_events: int, seed: int = 0) -> None:
    """A synthetic log of `n_events` (user_id, timestamp, behavior, category) rows, users interleaved in time."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_events // EVENTS_PER_USER, size=n_events)
    popularity = 1.0 / np.arange(1, N_BEHAVIORS + 1) ** 1.1
    behaviors = rng.choice(N_BEHAVIORS, size=n_events, p=popularity / popularity.sum())
    start = np.datetime64("2024-01-01T00:00:00", "s")
    seconds = np.sort(rng.integers(0, 366 * 24 * 3600, size=n_events))
    table = pa.table({
        "user_id": pa.array(np.char.add("u", users.astype(str))),
        "timestamp": pa.array((start + seconds.astype("timedelta64[s]")).astype(str)),  # ISO: 2024-01-01T08:00:00
        "behavior": pa.array(np.char.add("behavior_", behaviors.astype(str))),
        "category": pa.array(np.char.add("category_", (behaviors % 20).astype(str))),
    })
    pacsv.write_csv(table, path)


CHILD = r"""
import json, resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
started = time.perf_counter()
if kind == "read":
    import pandas as pd
    pd.read_csv(path)
else:
    from behaviorlm.data.dataset import load_dataset
    from behaviorlm.utils import compose_config
    cfg = compose_config(["data=csv", f"data.path={path}", *sys.argv[3:]])
    started = time.perf_counter()  # composing the config is not the data layer's cost
    load_dataset(cfg)
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
"""


def measure(kind: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), *CAPS], capture_output=True, text=True,
                            cwd=PROJECT_ROOT, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    from behaviorlm.hardware import machine

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench_data.json")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    report: dict = {"command": "python -m tools.bench.bench_data " + " ".join(sys.argv[1:]),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "caps": CAPS}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        for name in args.sizes:
            path = Path(tmp) / f"log_{name}.csv"
            started = time.perf_counter()
            # in a child of its own: a child's peak memory (ru_maxrss) starts from its parent's at fork, so the
            # parent must never hold the generated table
            subprocess.run([sys.executable, "-c", f"from pathlib import Path; from tools.bench.bench_data import "
                            f"write_log; write_log(Path({str(path)!r}), {SIZES[name]})"], cwd=PROJECT_ROOT, check=True)
            read = measure("read", path)
            load = measure("load", path)
            report[name] = {
                "events": SIZES[name], "users": SIZES[name] // EVENTS_PER_USER, "behaviors": N_BEHAVIORS,
                "file_mb": round(path.stat().st_size / 2 ** 20, 1),
                "seconds_write_file": round(time.perf_counter() - started, 2),
                "seconds_read_file": round(read["seconds"], 3), "seconds_load_dataset": round(load["seconds"], 3),
                "load_vs_read_ratio": round(load["seconds"] / read["seconds"], 2),
                "peak_rss_gb": round(load["peak_rss_gb"], 3), "peak_rss_gb_read_file": round(read["peak_rss_gb"], 3)}
            print(name, json.dumps(report[name]), flush=True)
            path.unlink()
    report["machine"] = machine(load_at_start)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
