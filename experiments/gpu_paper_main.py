"""The claims sweeps on one GPU, inside a fixed time budget, in order of value.

    python -m experiments.gpu_paper_main --scale nyc_cpu --budget-s 480 \\
        --sweeps paper-main ablation-components ablation-aux ablation-few-shot      # on the GPU: results/gpu-nyc_cpu/
    python -m experiments.gpu_paper_main --budget-s 420                            # paper-main at full NYC scale
    python -m experiments.gpu_paper_main --budget-s 120 --out /tmp/gpm \\
        --set model=tiny_random data=synthetic debug=fast device=cpu     # the same code path on CPU, in seconds

Scales: `paper_nyc` (the default: all 7,236 training samples, the whole test period, up to 8 epochs a tuning stage,
F = 20) and `nyc_cpu` (the preset the claims table is measured at). On top of either, for one GPU: batch 32 for
training and scoring, fp32 weights under bf16 autocast (`model.precision=mixed`; bf16 weights once trained on NaN
on an H100), and beam scoring as the CPU runs rank. So a GPU sweep is its own sweep: batch 32 takes other steps
than nyc_cpu's batch 8 and every job records `compute_dtype`, and `collect` refuses to pair it with a CPU job.

Each sweep is the ablation config its make target runs (`ablation=paper_main`, `ablation=components`, ...), one
Hydra multirun per seed, seeds one after another, each sweep in its own folder OUT/<target>/ as `make` leaves it.
A seed starts only while the budget left exceeds the slowest seed of that sweep so far; a seed cut by the budget
keeps the jobs it finished, and the next sweeps do not start. Then `behaviorlm collect` writes each sweep's
table.md, table.csv, jobs.csv and paired.csv (against the make target's reference), and `gpu_run.json` records the
card, the budget and each seed's wall time.

`--parallel` runs lanes at once on the one GPU: a lane is one seed of one group of sweeps (a group is sweeps joined
by commas, `--sweeps paper-main,ablation-components ablation-b-rate,ablation-few-shot`), its sweeps one after
another. A SmolLM2 job leaves an H100 idle most of the time (a training step is about 3% of its bf16 peak; scoring
walks the trie in Python), so lanes fill it. A later group's lane starts once the first group's lane of its seed
has finished a job (or ended), so the stages they share (A-Tuning, the selection pool) come from the stage cache
instead of being computed twice at once. Each lane's output goes to OUT/logs/<target>_seed<n>.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from behaviorlm.utils import PROJECT_ROOT, atomic_write_json

# make target -> (ablation config, swept key, reference): what `make <target>` runs and collects
SWEEPS = {
    "paper-main": ("paper_main", "stage_order", "joint"),
    "ablation-components": ("components", "variant", "full"),
    "ablation-aux": ("aux_ratio", "aux_ratio", "0.05"),
    "ablation-few-shot": ("few_shot", "samples_per_behavior", "20"),
    "ablation-b-rate": ("b_rate", "train.b_tuning.learning_rate", "1e-4"),
}
ONE_GPU = ("logger=none", "train.batch_size=32", "scoring.batch_size=32", "model.precision=mixed",
           "scoring.mode=beam", "scoring.beam_seed=none")  # the width beam the CPU results were scored with
SCALES = {"paper_nyc": ("experiment=paper_nyc", *ONE_GPU), "nyc_cpu": ("experiment=nyc_cpu", *ONE_GPU)}


def seed_command(sweep: str, seed: int, runs: Path, overrides: list[str]) -> list[str]:
    ablation = SWEEPS[sweep][0]
    # seed=<n> on the command line replaces the ablation's seed list; the job number restarts with every seed
    return [sys.executable, str(PROJECT_ROOT / "run.py"), "-m", f"ablation={ablation}", *overrides, f"seed={seed}",
            f"hydra.sweep.dir={runs}", "hydra.sweep.subdir=seed${seed}_${hydra.job.num}"]


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def run_seed(sweep: str, seed: int, runs: Path, overrides: list[str], slowest: float, deadline: float,
             log: Path | None = None) -> dict | None:
    """One seed of a sweep, if the time left exceeds `slowest` (the sweep's slowest seed so far): its record, or None
    when it does not start. A seed cut at the deadline keeps the jobs it finished. Its output goes to `log` if given."""
    left = deadline - time.monotonic()
    if left <= slowest or left <= 0:
        print(f"gpu_paper_main: {sweep} seed {seed} not started: {left:.0f} s left, the slowest seed took "
              f"{slowest:.0f} s", flush=True)
        return None
    command = seed_command(sweep, seed, runs, overrides)
    print("+", " ".join(command), flush=True)
    started = time.monotonic()
    with open(log, "w") if log else contextlib.nullcontext() as output:
        try:
            status = subprocess.run(command, cwd=PROJECT_ROOT, timeout=left, stdout=output,
                                    stderr=subprocess.STDOUT if output else None).returncode
        except subprocess.TimeoutExpired:
            status = "cut by the budget"
    record = {"sweep": sweep, "seed": seed, "seconds": time.monotonic() - started, "status": status,
              "jobs_done": len(list(runs.glob(f"seed{seed}_*/metrics.json")))}
    print(json.dumps(record), flush=True)
    return record


def run_sweep(sweep: str, seeds: list[int], folder: Path, overrides: list[str], deadline: float) -> list[dict]:
    """The sweep's seeds one after another until the deadline; one record per seed started."""
    runs = folder / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    records: list[dict] = []
    for seed in seeds:
        record = run_seed(sweep, seed, runs, overrides, max((r["seconds"] for r in records), default=0.0), deadline)
        if record is None:
            break
        records.append(record)
        if record["status"] != 0:
            break
    return records


class Lanes:
    """Seeds x groups of sweeps run at once, sharing the deadline and what each sweep's seeds have taken so far."""

    def __init__(self, groups: list[list[str]], seeds: list[int], out: Path, overrides: list[str], deadline: float):
        self.groups, self.seeds, self.out, self.overrides, self.deadline = groups, seeds, out, overrides, deadline
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.ended: set[int] = set()  # seeds whose first-group lane has ended

    def slowest(self, sweep: str) -> float:
        with self.lock:
            return max((r["seconds"] for r in self.records if r["sweep"] == sweep and r["status"] == 0), default=0.0)

    def first_group_has_a_job(self, seed: int) -> bool:
        first = self.groups[0][0]
        return seed in self.ended or any((self.out / first / "runs").glob(f"seed{seed}_*/metrics.json"))

    def lane(self, group_index: int, seed: int) -> None:
        if group_index > 0:  # its shared stages come from the first group's lane of this seed
            while not self.first_group_has_a_job(seed) and time.monotonic() < self.deadline:
                time.sleep(2)
        for sweep in self.groups[group_index]:
            record = run_seed(sweep, seed, self.out / sweep / "runs", self.overrides, self.slowest(sweep),
                              self.deadline, log=self.out / "logs" / f"{sweep}_seed{seed}.log")
            if record is None:
                break
            with self.lock:
                self.records.append(record)
            if record["status"] == "cut by the budget":
                break  # a failed seed (a job raised) does not stop the lane: its other sweeps may still run
        if group_index == 0:
            self.ended.add(seed)

    def run(self) -> list[dict]:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        for group in self.groups:
            for sweep in group:
                shutil.rmtree(self.out / sweep / "runs", ignore_errors=True)
        threads = [threading.Thread(target=self.lane, args=(g, seed), daemon=True)
                   for g in range(len(self.groups)) for seed in self.seeds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.records


def collect(folder: Path, sweep: str) -> int:
    """`behaviorlm collect` against the make target's reference; the number of completed jobs. A collect that fails
    (a seed without its reference job, say) is reported and the other sweeps are still collected."""
    done = sorted((folder / "runs").glob("*/metrics.json"))
    if done:
        _, key, reference = SWEEPS[sweep]
        status = subprocess.run([sys.executable, "-m", "behaviorlm.collect", str(folder), "--key", key,
                                 "--reference", reference], cwd=PROJECT_ROOT).returncode
        if status != 0:
            print(f"gpu_paper_main: collecting {folder} failed (status {status})", flush=True)
    return len(done)


def sweep_groups(items: list[str]) -> list[list[str]]:
    """`--sweeps` items: a target, or targets joined by commas that one lane runs in order."""
    groups = [item.split(",") for item in items]
    unknown = [name for group in groups for name in group if name not in SWEEPS]
    if unknown:
        raise SystemExit(f"error: --sweeps: unknown target {unknown[0]!r} (one of {', '.join(SWEEPS)})")
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=420, help="wall seconds for all sweeps together")
    parser.add_argument("--scale", choices=sorted(SCALES), default="paper_nyc")
    parser.add_argument("--sweeps", nargs="+", default=["paper-main"],
                        help="make targets to run, most valuable first (with --parallel: groups joined by commas)")
    parser.add_argument("--parallel", action="store_true",
                        help="one lane per seed and group of sweeps, all at once on the one GPU")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="default: results/gpu-<scale>")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides after the scale's (a CPU dry run: model=tiny_random ...)")
    args = parser.parse_args(argv)
    out = args.out or PROJECT_ROOT / "results" / f"gpu-{args.scale}"
    overrides = [*SCALES[args.scale], *args.set]

    started = time.monotonic()
    deadline = started + args.budget_s
    groups = sweep_groups(args.sweeps)
    names = [name for group in groups for name in group]
    if args.parallel:
        records = Lanes(groups, args.seeds, out, overrides, deadline).run()
        with ThreadPoolExecutor(len(names)) as pool:  # each collect is its own process: all at once
            completed = dict(zip(names, pool.map(lambda name: collect(out / name, name), names)))
    else:
        records, completed = [], {}
        for sweep in names:
            sweep_records = run_sweep(sweep, args.seeds, out / sweep, overrides, deadline)
            records += sweep_records
            completed[sweep] = collect(out / sweep, sweep)
            if len(sweep_records) < len(args.seeds) or any(r["status"] != 0 for r in sweep_records):
                break  # the budget is spent: a later sweep would start without time to finish a seed
    atomic_write_json(out / "gpu_run.json", {
        "device": device_name(), "scale": args.scale, "budget_s": args.budget_s, "parallel": args.parallel,
        "wall_s": time.monotonic() - started, "overrides": overrides, "seeds": records,
        "jobs_completed": completed,
        "command": " ".join(["python -m experiments.gpu_paper_main", *(argv if argv is not None else sys.argv[1:])])})
    print(f"gpu_paper_main: {sum(completed.values())} jobs completed in {time.monotonic() - started:.0f} s -> {out}")
    if not any(completed.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
