"""paper-main at the paper's full NYC scale on one GPU, inside a fixed time budget.

    python -m experiments.gpu_paper_main --budget-s 420                  # on the GPU: results/gpu-paper-main/
    python -m experiments.gpu_paper_main --budget-s 120 --out /tmp/gpm \\
        --set model=tiny_random data=synthetic debug=fast device=cpu     # the same code path on CPU, in seconds

`experiment=paper_nyc`: all 7,236 training samples, the whole test period (9,812 samples), up to 8 epochs a tuning
stage with early stopping on the validation slice, F = 20. On top of it, for one GPU: batch 32 for training and
scoring, and beam scoring (as nyc_cpu, so that both scales rank the same way). Seeds run one after another, each
as one Hydra multirun of the four stage orders (progressive first: anchor_only then reuses its A-Tuning from the
stage cache). A seed starts only while the budget left exceeds the slowest seed so far; a seed cut by the budget
keeps the jobs it finished. Then `behaviorlm collect` writes table.md, table.csv, jobs.csv and paired.csv (against
joint) and `gpu_run.json` records the card, the budget and each seed's wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from behaviorlm.utils import PROJECT_ROOT, atomic_write_json

ORDERS = ("progressive", "joint", "anchor_only", "zero_shot")
FULL_SCALE = ("experiment=paper_nyc", "logger=none", "train.batch_size=32", "scoring.batch_size=32",
              "scoring.mode=beam", "scoring.beam_seed=none")  # the width beam its results were scored with


def seed_command(seed: int, runs: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "run.py"), "-m", *FULL_SCALE, *overrides, f"seed={seed}",
            f"stage_order={','.join(ORDERS)}", f"hydra.sweep.dir={runs}",
            "hydra.sweep.subdir=seed${seed}_${stage_order}"]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=420, help="wall seconds for all seeds together")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "gpu-paper-main")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides after the full-scale ones (a CPU dry run: model=tiny_random ...)")
    args = parser.parse_args()

    runs = args.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    started = time.monotonic()
    seeds: list[dict] = []
    for seed in args.seeds:
        left = args.budget_s - (time.monotonic() - started)
        slowest = max((s["seconds"] for s in seeds), default=0.0)
        if left <= slowest or left <= 0:
            print(f"gpu_paper_main: seed {seed} not started: {left:.0f} s left, the slowest seed took "
                  f"{slowest:.0f} s", flush=True)
            break
        command = seed_command(seed, runs, args.set)
        print("+", " ".join(command), flush=True)
        seed_started = time.monotonic()
        try:
            status = subprocess.run(command, cwd=PROJECT_ROOT, timeout=left).returncode
        except subprocess.TimeoutExpired:
            status = "cut by the budget"
        seeds.append({"seed": seed, "seconds": time.monotonic() - seed_started, "status": status,
                      "jobs_done": sorted(p.parent.name for p in runs.glob(f"seed{seed}_*/metrics.json"))})
        print(json.dumps(seeds[-1]), flush=True)
        if status != 0:
            break

    done = sorted(runs.glob("*/metrics.json"))
    if done:
        subprocess.run([sys.executable, "-m", "behaviorlm.collect", str(args.out), "--key", "stage_order",
                        "--reference", "joint"], cwd=PROJECT_ROOT, check=True)
    atomic_write_json(args.out / "gpu_run.json", {
        "device": device_name(), "budget_s": args.budget_s, "wall_s": time.monotonic() - started,
        "overrides": [*FULL_SCALE, *args.set], "seeds": seeds, "jobs_completed": len(done),
        "command": " ".join(["python -m experiments.gpu_paper_main", *sys.argv[1:]])})
    print(f"gpu_paper_main: {len(done)} jobs completed in {time.monotonic() - started:.0f} s -> {args.out}")
    if not done:
        sys.exit(1)


if __name__ == "__main__":
    main()
