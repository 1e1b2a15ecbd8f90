"""A sweep folder, whoever made it, and a sweep in progress.

Two layouts hold the same jobs: `python run.py -m ... hydra.sweep.dir=D` leaves them at `D/<N>/`, a make target at
`D/runs/<N>/`. Each job folder has `metrics.json` and Hydra's `.hydra/overrides.yaml`, which says what the job was
given on the command line or by the sweeper; the keys whose values differ between jobs (the seed aside) are what the
sweep varies, so `behaviorlm collect` and `behaviorlm dashboard` need no `--key`.

While a sweep runs, `SweepProgress` (a Hydra callback, conf/hydra/default.yaml) prints one line per finished job with
the counts and an estimate of the time left, keeps `sweep_summary.json` current, and at exit says which jobs failed.
"""

from __future__ import annotations

import atexit
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from behaviorlm.utils import atomic_write_json, kill_point

# Fields an ablation sweeps over, in the order they are tried when a folder has no Hydra overrides to tell.
SWEPT_KEYS = ("stage_order", "variant", "aux_ratio", "samples_per_behavior", "anchor_threshold", "model", "method")
# Overrides that say how a job ran or where it logged, not what it computed: never a swept key.
NOT_SWEPT = ("seed", "hydra.", "logger.", "paths.", "cache.", "device")


def jobs_root(sweep_dir: Path) -> Path:
    """The folder holding a sweep's job folders: `<dir>/runs` (a make target) or `<dir>` (a Hydra multirun)."""
    runs = Path(sweep_dir) / "runs"
    return runs if runs.is_dir() else Path(sweep_dir)


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job folders that hold a metrics.json, in job order (2 before 10). When the folder's last sweep planned
    fewer jobs than it holds (sweep_summary.json), the extra folders are an earlier sweep's and are left out."""
    root = jobs_root(sweep_dir)
    found = sorted((path.parent for path in root.glob("*/metrics.json")),
                   key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
    summary = root / "sweep_summary.json"
    content = json.loads(summary.read_text()) if summary.is_file() else None
    # sweeps written before the summary counted its jobs (results/paper-main) kept a bare list: no plan to check
    planned = content.get("planned") if isinstance(content, dict) else None
    if isinstance(planned, int):
        stale = [p for p in found if p.name.isdigit() and int(p.name) >= planned]
        if stale:
            print(f"warning: {root} holds {len(stale)} job folders beyond the {planned} its last sweep planned "
                  f"({stale[0].name}...): left out", file=sys.stderr)
        found = [p for p in found if p not in stale]
    return found


def override_lines(job_dir: Path) -> Optional[list[str]]:
    """The job's own overrides as Hydra wrote them (`.hydra/overrides.yaml`: `key=value` lines); None without it."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return [str(line) for line in yaml.safe_load(path.read_text(encoding="utf-8")) or []]


def job_overrides(job_dir: Path) -> dict[str, Any]:
    """The job's own overrides, values parsed as YAML (`0.05` a float); {} without them."""
    found = {}
    for line in override_lines(job_dir) or []:
        key, _, value = line.partition("=")
        try:
            found[key.lstrip("+~")] = yaml.safe_load(value)
        except yaml.YAMLError:  # a value YAML cannot read (a Hydra function): compare it as text
            found[key.lstrip("+~")] = value
    return found


def swept_keys(dirs: list[Path]) -> list[str]:
    """The override keys whose values differ across the jobs, in the order they are first given; the seed and the
    keys that only say where a job ran or logged are not swept."""
    overrides = [job_overrides(d) for d in dirs]
    keys: list[str] = []
    for job in overrides:
        keys += [k for k in job if k not in keys and not k.startswith(NOT_SWEPT)]
    return [k for k in keys if len({json.dumps(job.get(k), default=str) for job in overrides}) > 1]


def varying_fields(jobs) -> list[str]:
    """The SWEPT_KEYS whose values differ across a frame of jobs' metrics."""
    return [k for k in SWEPT_KEYS if k in jobs and jobs[k].astype(str).nunique() > 1]


def completed_jobs(sweep_dir: Path) -> dict[Path, dict]:
    """The sweep's completed job folders, in job order, with their metrics."""
    jobs = {folder: json.loads((folder / "metrics.json").read_text()) for folder in job_dirs(sweep_dir)}
    return {folder: metrics for folder, metrics in jobs.items() if metrics.get("status") == "completed"}


def load_sweep(sweep_dir: Path):
    """(one row per job folder: its metrics.json, its folder name as `job` and the swept overrides its metrics do not
    echo, such as train.b_tuning.learning_rate; the keys the sweep varies): the overrides that differ between jobs,
    else, for folders without Hydra's overrides, the first known sweep field whose values differ. What `behaviorlm
    collect` and the dashboard read."""
    import pandas as pd

    dirs = job_dirs(sweep_dir)
    keys = swept_keys(dirs)
    rows = []
    for folder in dirs:
        metrics = json.loads((folder / "metrics.json").read_text())
        metrics["job"] = folder.name
        overrides = job_overrides(folder)
        for key in keys:
            metrics.setdefault(key, overrides.get(key))
        rows.append(metrics)
    jobs = pd.DataFrame(rows)
    return jobs, keys or varying_fields(jobs)[:1]


def grid(config: DictConfig) -> Optional[list[dict[str, Any]]]:
    """The jobs of a multirun in the basic sweeper's order, each as {key: its value}: the product of the overrides
    in sweep_overrides' order (the sweeper's `params`, a command-line value in its key's place), the first key
    varying slowest. None where there is no grid to tell in advance: Optuna's trials, an interval sweep."""
    from hydra.errors import HydraException

    from behaviorlm.sweep_checks import sweep_overrides

    if config.hydra.sweeper.get("n_trials") is not None:
        return None
    overrides = sweep_overrides(config)
    try:
        values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()] for o in overrides]
    except HydraException:
        return None
    keys = [o.key_or_group for o in overrides]
    return [dict(zip(keys, combination)) for combination in itertools.product(*values)]


def planned_jobs(config: DictConfig) -> Optional[int]:
    """How many jobs a multirun will start: its grid's size (the basic sweeper), the trial count (Optuna), None
    when it cannot be told in advance."""
    trials = config.hydra.sweeper.get("n_trials")
    if trials is not None:
        return int(trials)
    jobs = grid(config)
    return None if jobs is None else len(jobs)


clock = time.time  # the progress line's clock (a test sets its own)

# Output folders of jobs that reused a finished result (pipeline.reuse_completed_job), for the progress line.
REUSED: set[str] = set()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class SweepProgress(Callback):
    """Hydra callback: one progress line per finished job, `sweep_summary.json` after each, the failures at exit.

    Hydra's basic launcher runs every job even when one raises, then re-raises the first failure, so the sweep
    still exits non-zero; the failure summary is printed at exit, below Hydra's own error.
    """

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.sweep_dir: Optional[Path] = None
        self.planned: Optional[int] = None
        self.started = self.job_started = clock()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.planned = planned_jobs(config)
        self.started = clock()
        atexit.register(self.report)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.job_started = clock()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.sweep_dir is None:
            return
        status = getattr(getattr(job_return, "status", None), "name", "UNKNOWN")
        error = None
        if status == "FAILED":
            exc = job_return._return_value
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        output_dir = str(Path(config.hydra.runtime.output_dir).resolve())
        reused = status == "COMPLETED" and output_dir in REUSED
        self.jobs.append({"job": config.hydra.job.num, "overrides": list(config.hydra.overrides.task),
                          "status": "REUSED" if reused else status, "error": error,
                          "seconds": round(clock() - self.job_started, 1)})
        print(self.progress_line(), flush=True)
        self.write_summary()
        kill_point(f"sweep:after_job_{config.hydra.job.num}")

    def counts(self) -> dict[str, Any]:
        statuses = [job["status"] for job in self.jobs]
        return {"planned": self.planned, "done": len(statuses), "completed": statuses.count("COMPLETED"),
                "reused": statuses.count("REUSED"), "failed": statuses.count("FAILED"),
                "elapsed_s": round(clock() - self.started, 1)}

    def progress_line(self) -> str:
        """`[sweep] 5/12 done (4 completed, 1 failed), 37 min elapsed, about 52 min left`; the time left is the
        mean of the jobs that ran (reused ones took seconds) times the jobs still to start."""
        counts = self.counts()
        parts = [f"{counts['completed']} completed"] + [f"{counts[k]} {k}" for k in ("reused", "failed") if counts[k]]
        line = f"[sweep] {counts['done']}/{self.planned or '?'} done ({', '.join(parts)}), " \
               f"{_duration(counts['elapsed_s'])} elapsed"
        ran = [job["seconds"] for job in self.jobs if job["status"] != "REUSED"]
        if self.planned is not None and ran and self.planned > counts["done"]:
            line += f", about {_duration(sum(ran) / len(ran) * (self.planned - counts['done']))} left"
        return line

    def write_summary(self) -> None:
        assert self.sweep_dir is not None
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.sweep_dir / "sweep_summary.json", {**self.counts(), "jobs": self.jobs})

    def report(self) -> None:
        if not self.jobs or self.sweep_dir is None:
            return
        self.write_summary()
        failed = [j for j in self.jobs if j["status"] == "FAILED"]
        lines = [f"sweep {self.sweep_dir}: {len(self.jobs) - len(failed)}/{len(self.jobs)} jobs completed"]
        lines += [f"  FAILED job {j['job']} ({' '.join(j['overrides'])}): {j['error']}" for j in failed]
        print("\n".join(lines), file=sys.stderr if failed else sys.stdout)
