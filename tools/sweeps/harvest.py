"""Copy the complete seeds of a background sweep into the work tree's results/ and collect them there.

A session ends its background commands with it, and only a kept machine keeps the sweep's folders
(tools/sweeps/cpu_claims.sh), so a seed's jobs are committed as soon as all of them have completed; a seed with a
job still running or failed is left where it is, since a table that mixes a seed's finished methods with another
seed's would compare different seed sets.

    python -m tools.sweeps.harvest ~/sweeps/results-bf16 paper-main ablation-components   # (cpu_claims.sh harvest)
    python -m tools.sweeps.harvest ~/sweeps/results-fp32 paper-main --restore e8122e5 --results results/avx2-fp32

Each target lands in results/<target>, unless that folder holds another sweep (an earlier run of the same target,
such as the paper-main of before today's defaults: its `.wandb_group` differs or is absent): then in
results/<target>-rerun, which the old folder stays beside until the rerun replaces it. The job folders keep what
the committed results keep (metrics, per-sample predictions, selection, Hydra's record); adapters, checkpoints and
W&B files stay on the machine. `behaviorlm collect` then runs on the copy with the key and reference the target's
Makefile line gives it, so the tables are the ones `make <target>` would write.

--restore COMMIT goes the other way, on a machine that starts a sweep afresh: the committed jobs that COMMIT ran
are copied into the sweep folder (one that does not exist yet), where the sweep's rounds reuse them (their job keys
match where the clone lies at the same path) instead of running the committed seeds again.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from behaviorlm import collect
from behaviorlm.sweeps import completed_jobs, grid, planned_jobs

REPO = Path(__file__).resolve().parents[2]
# What stays on the machine: the weights and W&B's files (the .gitignore leaves them out of a commit too).
LEFT_ON_THE_MACHINE = shutil.ignore_patterns("adapter", "base_model", "wandb", "*.pt", "*.safetensors")
SWEEP_FILES = ("multirun.yaml", "sweep_summary.json", ".wandb_group")


def grid_seeds(record: Path) -> list[int]:
    """The seed of each job of the grid a multirun.yaml records, in job order (sweeps.grid; an error where the
    sweep has none)."""
    config = OmegaConf.load(record)
    jobs = grid(config)
    if jobs is None:
        raise SystemExit(f"error: {record}: the sweep's jobs cannot be told in advance (not the basic sweeper's "
                         "grid), so neither can a complete seed")
    return [int(job.get("seed", config.seed)) for job in jobs]


def complete_seeds(sweep: Path) -> tuple[dict[int, dict[Path, dict]], dict]:
    """({seed: {its job folders: their metrics}} for the seeds all of whose planned jobs completed,
    {seed: completed/planned} for every seed the sweep plans). A completed folder counts only at its place in the
    last sweep's grid: a round over seed=2 alone numbers its jobs from 0, so a folder beyond that grid, or one whose
    seed is not the one its number stands for, is another round's (or a restored copy) and would otherwise make a
    seed look complete with a job counted twice."""
    runs = sweep / "runs"
    job_seeds = grid_seeds(runs / "multirun.yaml")
    seeds = list(dict.fromkeys(job_seeds))
    per_seed = len(job_seeds) // len(seeds)
    by_seed: dict[int, dict[Path, dict]] = {}
    elsewhere = []
    for folder, metrics in completed_jobs(sweep).items():
        number = int(folder.name) if folder.name.isdigit() else len(job_seeds)
        if number < len(job_seeds) and job_seeds[number] == int(metrics["seed"]):
            by_seed.setdefault(int(metrics["seed"]), {})[folder] = metrics
        else:
            elsewhere.append(folder.name)
    if elsewhere:
        print(f"{sweep.name}: jobs {', '.join(elsewhere)} are not at their place in the last sweep's grid (seeds "
              f"{','.join(map(str, seeds))}): left out", file=sys.stderr)
    progress = {seed: f"{len(by_seed.get(seed, []))}/{per_seed} jobs" for seed in seeds}
    return {seed: by_seed[seed] for seed in seeds if len(by_seed.get(seed, [])) == per_seed}, progress


def target_folders(results: Path, target: str) -> tuple[Path, Path]:
    """Where a target's committed sweep may lie: results/<target>, and results/<target>-rerun beside an older one."""
    return results / target, results / f"{target}-rerun"


def destination(sweep: Path, results: Path, target: str) -> Path:
    """The folder that holds the sweep's earlier seeds (its W&B group), else results/<target> when it is free, else
    results/<target>-rerun; an error when both hold other sweeps' jobs (a third sweep of the target, say on another
    machine, would otherwise be merged into the rerun's)."""
    if not (sweep / "runs" / ".wandb_group").is_file():
        raise SystemExit(f"error: {sweep / 'runs'} has no .wandb_group: not a sweep a make target started")
    group = (sweep / "runs" / ".wandb_group").read_text().strip()
    candidates = target_folders(results, target)
    held = {dest: (dest / "runs" / ".wandb_group").read_text().strip()
            for dest in candidates if (dest / "runs" / ".wandb_group").is_file()}
    # the sweep's own folder first: a rerun's third seed joins its first two in <target>-rerun even when
    # <target> is free (an fp32 series whose folder has no old sweep beside it)
    for dest in sorted(candidates, key=lambda dest: held.get(dest) != group):
        if held.get(dest) == group or not (dest / "runs").is_dir():
            return dest
    raise SystemExit(f"error: {candidates[0]} and {candidates[1]} both hold other sweeps' jobs (not W&B group "
                     f"{group}): move one aside before harvesting {sweep}")


def compute_kinds(jobs: dict[Path, dict]) -> dict[str, list[str]]:
    """{"cpu/bfloat16": [job folder names]}: the device and precision each job's matrix products ran in, in
    collect's own terms (collect.compute_labels: "not recorded" for jobs that predate the record)."""
    labels = collect.compute_labels(pd.DataFrame(list(jobs.values())))
    kinds: dict[str, list[str]] = {}
    for folder, kind in zip(jobs, labels):
        kinds.setdefault(kind, []).append(folder.name)
    return kinds


def refuse_mixed_compute(new_jobs: dict[Path, dict], dest: Path, committed: dict[Path, dict]) -> None:
    """One folder, one kind of compute: seeds of one sweep run on a bf16 machine and on an fp32 one differ by the
    machine as well as the seed, so a harvest that would mix them stops with both kinds named. `committed`: the
    destination's completed jobs."""
    held = {job: metrics for job, metrics in committed.items() if job.name not in {folder.name for folder in new_jobs}}
    kinds = compute_kinds(new_jobs)
    held_kinds = compute_kinds(held)
    if len(kinds) > 1 or held_kinds and set(held_kinds) != set(kinds):
        every = {kind: held_kinds.get(kind, []) + kinds.get(kind, []) for kind in sorted({*held_kinds, *kinds})}
        found = "; ".join(f"{kind}: jobs {', '.join(sorted(names, key=int))}" for kind, names in every.items())
        raise SystemExit(f"error: {dest / 'runs'} would mix compute kinds ({found}): harvest the new seeds into "
                         "another folder, or move the held ones aside")


def plans_fewer_jobs(sweep: Path, dest: Path) -> bool:
    """Whether the sweep's grid is smaller than the one the destination's multirun.yaml records."""
    held = dest / "runs" / "multirun.yaml"
    if not held.is_file():
        return False
    planned, recorded = (planned_jobs(OmegaConf.load(path)) for path in (sweep / "runs" / "multirun.yaml", held))
    return planned is not None and recorded is not None and planned < recorded


def refuse_misplaced(seeds: dict[int, dict[Path, dict]], dest: Path, committed: dict[Path, dict],
                     keeps_record: bool) -> None:
    """Stop before a job lands at a folder number that stands for another seed: in the destination's grid where
    the destination keeps its record (`keeps_record`, plans_fewer_jobs: a round over a later seed alone, seed=2,
    numbers its jobs from 0, where the full grid keeps seed 0's), or over a committed job of another seed."""
    record = dest / "runs" / "multirun.yaml"
    job_seeds = grid_seeds(record) if keeps_record else None
    held = {folder.name: int(metrics["seed"]) for folder, metrics in committed.items()}
    for seed, folders in seeds.items():
        for folder in folders:
            number = int(folder.name)
            if job_seeds is not None and (number >= len(job_seeds) or job_seeds[number] != seed):
                place = f"seed {job_seeds[number]}'s place" if number < len(job_seeds) else "beyond its grid"
                raise SystemExit(f"error: job {number} of {folder.parent} is seed {seed}, {place} in {record}: run "
                                 "the seeds from the grid's first (seed=0,1,2) for its jobs to keep their numbers")
            if held.get(folder.name, seed) != seed:
                target = dest / "runs" / folder.name
                raise SystemExit(f"error: job {number} of {folder.parent} is seed {seed}, and {target} holds seed "
                                 f"{held[folder.name]}'s: a harvest replaces no other seed's job")


def already_harvested(job: Path, copy: Path) -> bool:
    """Whether the copy holds the job's result already: a later round that reuses a finished job leaves its
    metrics.json as it was and only adds to its log and Hydra record, which need not churn the committed copy."""
    held = copy / "metrics.json"
    return held.is_file() and held.read_bytes() == (job / "metrics.json").read_bytes()


def collect_arguments(target: str, makefile: Path = REPO / "Makefile") -> list[str]:
    """The --key/--reference `make <target>` hands `behaviorlm collect` (its `$(call sweep,...)` line)."""
    found = re.search(rf"\$\(call sweep,{re.escape(target)},[^,)]*,([^,)]+)(?:,([^,)]*))?\)", makefile.read_text())
    if not found:
        raise SystemExit(f"error: {makefile} has no '$(call sweep,{target},...)' line to take the collect key from")
    key, reference = found.groups()
    return ["--key", key] + (["--reference", reference] if reference else [])


def harvest(sweep: Path, results: Path, target: str, dry_run: bool = False) -> Path | None:
    """Copy the sweep's complete seeds into their destination and collect it; the destination, or None. With
    dry_run, only say how far each seed is."""
    seeds, progress = complete_seeds(sweep)
    print(f"{target}: " + ", ".join(f"seed {seed} {done}" for seed, done in progress.items()))
    if not seeds or dry_run:
        return None
    dest = destination(sweep, results, target)
    committed = completed_jobs(dest)
    new_jobs = {folder: metrics for jobs in seeds.values() for folder, metrics in jobs.items()}
    refuse_mixed_compute(new_jobs, dest, committed)
    keeps_record = plans_fewer_jobs(sweep, dest)
    refuse_misplaced(seeds, dest, committed, keeps_record)
    (dest / "runs").mkdir(parents=True, exist_ok=True)
    if keeps_record:
        # a round over fewer seeds (cpu_claims.sh) records a smaller grid: over the larger one's record, collect
        # would take the jobs beyond it for an earlier sweep's and leave the later seeds out of every table
        print(f"{target}: the sweep now plans fewer jobs than {dest / 'runs'} records: its record is kept")
    else:
        for name in SWEEP_FILES:
            if (sweep / "runs" / name).is_file():
                shutil.copy2(sweep / "runs" / name, dest / "runs" / name)
    for folders in seeds.values():
        for folder in folders:
            if already_harvested(folder, dest / "runs" / folder.name):
                continue
            # copied beside runs/, then swapped in: an interrupted harvest leaves no half-copied job to collect
            staged = dest / f".harvest-{folder.name}"
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(folder, staged, ignore=LEFT_ON_THE_MACHINE)
            shutil.rmtree(dest / "runs" / folder.name, ignore_errors=True)
            staged.rename(dest / "runs" / folder.name)
    print(f"{target}: seeds {sorted(seeds)} -> {dest}")
    collect.main([str(dest), *collect_arguments(target)])
    return dest


def made_by(job: Path, commit: str) -> bool:
    """Whether the job ran from `commit` (a prefix of it) in a clean tree, as its run_info.json records."""
    info = json.loads((job / "run_info.json").read_text()) if (job / "run_info.json").is_file() else {}
    return (info.get("git_commit") or "").startswith(commit) and not info.get("git_dirty")


# Jobs of one target that are another target's jobs under another name: the same config once the ignored keys are
# left out (cache_keys.JOB_IGNORES; task_name among them), hence the same job key. (target, its swept value as the
# ablation config writes it, source target, the source's swept value.)
# Checked with the pinned commit e8122e5: its job keys of aux 0.05, b-rate 1e-4, components' full and paper-main's
# progressive (seed 0) are one key, and aux 0's is components' no_aux's.
EQUIVALENT_JOBS = (("ablation-components", "full", "paper-main", "progressive"),
                   ("ablation-aux", "0", "ablation-components", "no_aux"),
                   ("ablation-aux", "0.05", "paper-main", "progressive"),
                   ("ablation-aux", "0.05", "ablation-components", "full"),
                   ("ablation-b-rate", "1e-4", "paper-main", "progressive"))


def sweep_grid(target: str, makefile: Path = REPO / "Makefile") -> tuple[list[str], str, list[str]]:
    """(seeds, the swept key, its values) in the order the target's ablation config lists them, as written there:
    its jobs are numbered seed-major over these (job = seed index * len(values) + value index)."""
    found = re.search(rf"\$\(call sweep,{re.escape(target)},ablation=([\w-]+),", makefile.read_text())
    if not found:
        raise SystemExit(f"error: {makefile} has no '$(call sweep,{target},ablation=...)' line")
    params = dict(OmegaConf.load(REPO / "behaviorlm" / "conf" / "ablation" / f"{found.group(1)}.yaml")
                  .hydra.sweeper.params)
    seeds = str(params.pop("seed")).split(",")
    ((key, values),) = params.items()
    return seeds, key, str(values).split(",")


def committed_jobs_of(results: Path, target: str, commit: str) -> tuple[Path | None, list[Path]]:
    """(the committed folder, its jobs that `commit` ran): results/<target>, else results/<target>-rerun."""
    for held in target_folders(results, target):
        ran = [job for job in completed_jobs(held) if made_by(job, commit)]
        if ran:
            return held, ran
    return None, []


def equivalent_jobs(results: Path, target: str, commit: str) -> dict[str, Path]:
    """{job number in target's grid: a committed job of another target that `commit` ran with the same config}."""
    planted: dict[str, Path] = {}
    for name, value, source, source_value in EQUIVALENT_JOBS:
        if name != target:
            continue
        seeds, _, values = sweep_grid(target)
        source_key = collect_arguments(source)[1]
        for job in committed_jobs_of(results, source, commit)[1]:
            metrics = json.loads((job / "metrics.json").read_text())
            if str(metrics.get(source_key)) == source_value and str(metrics["seed"]) in seeds:
                planted.setdefault(str(seeds.index(str(metrics["seed"])) * len(values) + values.index(value)), job)
    return planted


def restore(sweep: Path, results: Path, target: str, commit: str) -> list[str]:
    """Copy into sweep/runs the committed jobs of `target` that `commit` ran (run_info.json's git_commit, clean
    tree), with their sweep's record, and at their place in its grid the committed jobs of other targets that are
    its jobs too (EQUIVALENT_JOBS: ablation-aux's 0.05 is ablation-components' full); the names of the jobs copied.
    The sweep reuses a copied job only where its job key matches the job it would run (else it runs it, over the
    copy), so a copy can save hours and cannot pass for another job. A sweep folder that exists is left as it is."""
    if (sweep / "runs").exists():
        print(f"{target}: {sweep / 'runs'} exists: nothing restored")
        return []
    held, own = committed_jobs_of(results, target, commit)
    jobs = {job.name: job for job in own}
    others = {name: job for name, job in equivalent_jobs(results, target, commit).items() if name not in jobs}
    if not jobs and not others:
        print(f"{target}: no committed job of commit {commit} under {results}: the sweep starts from nothing")
        return []
    # staged beside the sweep folder, then renamed: an interrupted restore leaves no half-filled runs/ to resume
    staged = sweep / ".restore-runs"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for name in SWEEP_FILES if held else ():
        if (held / "runs" / name).is_file():
            shutil.copy2(held / "runs" / name, staged / name)
    for name, job in {**jobs, **others}.items():
        shutil.copytree(job, staged / name)
    staged.rename(sweep / "runs")
    if jobs:
        print(f"{target}: restored jobs {', '.join(sorted(jobs, key=int))} of commit {commit} from {held / 'runs'}")
    for name, job in sorted(others.items(), key=lambda item: int(item[0])):
        print(f"{target}: job {name} is {job} (the same config): copied for the sweep to reuse")
    return sorted([*jobs, *others], key=int)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", type=Path, help="the folder holding the targets' sweeps (<target>/runs)")
    parser.add_argument("targets", nargs="+", help="make targets, e.g. paper-main ablation-components")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="where they land (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="only say how far each seed is (completed/planned "
                        "jobs); copy nothing")
    parser.add_argument("--restore", metavar="COMMIT", help="copy the committed jobs COMMIT ran back into sweep "
                        "folders that do not exist yet, for the sweep to reuse; harvest nothing")
    args = parser.parse_args(argv)
    for target in args.targets:
        if args.restore:
            restore(args.sweeps / target, args.results, target, args.restore)
            continue
        if (args.sweeps / target / "runs" / "multirun.yaml").is_file():
            harvest(args.sweeps / target, args.results, target, args.dry_run)
        else:
            print(f"{target}: no sweep under {args.sweeps / target} yet")


if __name__ == "__main__":
    main()
