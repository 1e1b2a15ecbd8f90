"""Upload a sweep's offline W&B runs with wandb's own `wandb sync`, then say how to build its dashboard.

    behaviorlm sync multirun/behaviorlm/2026-12-03_10-00-00      # every <job>/wandb/offline-run-* below the folder
    behaviorlm sync results/paper-main --dry-run                  # list them, upload nothing

Jobs log offline when no W&B credentials are present (logger.mode=auto); once `wandb login` has run, this one
command uploads them all into the projects and groups they were logged to.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional

from behaviorlm.tracking import has_wandb_credentials


def offline_runs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(runs to upload, superseded runs) below `folder`: in each `wandb/` folder (a job's, the collect summary's)
    the newest `offline-run-*` is the one its folder's results come from; older ones are of a run that was redone
    there, and uploading them would count a job twice in its group."""
    newest, older = [], []
    folders = {path.parent for path in Path(folder).rglob("offline-run-*") if path.parent.name == "wandb"}
    for wandb_dir in sorted(folders):
        runs = sorted(p for p in wandb_dir.glob("offline-run-*") if p.is_dir())  # offline-run-<YYYYMMDD_HHMMSS>-<id>
        newest += runs[-1:]
        older += runs[:-1]
    return newest, older


def sync_command(runs: list[Path]) -> list[str]:
    """wandb's own uploader over the given runs (already-synced ones are skipped by wandb itself)."""
    return [sys.executable, "-m", "wandb", "sync", "--yes", *map(str, runs)]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="behaviorlm sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, a job folder, or any folder above them")
    parser.add_argument("--dry-run", action="store_true", help="list the offline runs; upload nothing")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        sys.exit(f"error: '{args.sweep_dir}' is not a folder")
    runs, superseded = offline_runs(args.sweep_dir)
    if superseded:
        print(f"skipping {len(superseded)} offline runs superseded by a later run in the same job folder")
    if not runs:
        sys.exit(f"error: no offline W&B run under '{args.sweep_dir}' (jobs log them to <job>/wandb/offline-run-* "
                 "with logger=wandb when W&B is offline)")
    if args.dry_run:
        print("\n".join(map(str, runs)) + f"\n{len(runs)} offline runs would be uploaded")
        return
    if not has_wandb_credentials():
        sys.exit("error: not logged in to W&B: run `wandb login` (or set WANDB_API_KEY), then this again")
    print(f"uploading {len(runs)} offline runs from {args.sweep_dir} with `wandb sync`")
    result = subprocess.run(sync_command(runs))
    if result.returncode != 0:
        sys.exit(f"error: `wandb sync` exited with status {result.returncode}; runs it uploaded stay uploaded, "
                 "rerunning this skips them")
    print(f"uploaded. Next: behaviorlm dashboard {args.sweep_dir}")
