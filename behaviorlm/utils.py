"""Small shared helpers: atomic writes, config composition outside @hydra.main, seeding, one-line user errors."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"  # shipped inside the package: `behaviorlm train` needs no checkout
_CHECKOUT = PACKAGE_DIR.parent
# The project root that relative paths (data/, outputs/, .cache/) hang off: the git checkout when the package runs
# from one (editable install, run.py), else the user's working directory (an installed wheel).
PROJECT_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
# Where outputs/ and multirun/ go (paths.work_dir): the project root for run.py and make; `behaviorlm train` sets it
# to the working directory, so an installed command writes where it is run, editable install or wheel alike.
WORK_DIR = PROJECT_ROOT


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: str | Path) -> Path:
    """Give a file (0666) or folder tree (0777) the mode a plain `open()` / `mkdir()` would, under the umask.

    `tempfile.mkstemp` and `mkdtemp` create owner-only 0600 / 0700 entries; an atomic write renames one into place,
    so without this every result in a shared lab folder would be unreadable to the rest of the group."""
    path, mask = Path(path), current_umask()
    if path.is_dir():
        for folder, subfolders, files in os.walk(path):
            os.chmod(folder, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)
    return path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Let `write` fill a temporary file beside `path`, then rename: readers never see half a file. The temporary
    file is this call's own, so two writers of one path (jobs of a parallel sweep checkpointing the same stage)
    never rename one from under the other's write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("package_dir"):  # where the package (its configs and bundled data) is installed
        OmegaConf.register_new_resolver("package_dir", lambda: str(PACKAGE_DIR))
    if not OmegaConf.has_resolver("work_dir"):
        OmegaConf.register_new_resolver("work_dir", lambda: str(WORK_DIR))
    if not OmegaConf.has_resolver("file_stem"):
        OmegaConf.register_new_resolver("file_stem", file_stem)


def file_stem(path: str | None, default: str = "csv") -> str:
    """A data file's name without its format and compression suffixes (`logs/my_log.csv.gz` -> `my_log`), in the
    characters a W&B project and a file name accept: the default `data.name` of a user's log."""
    from behaviorlm.data.logs import COMPRESSIONS

    if not path:
        return default
    name = Path(str(path)).name
    for suffix in COMPRESSIONS:
        name = name.removesuffix(suffix)
    stem = Path(name).stem or default
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in stem)


def compose_config(overrides: list[str] | None = None, config_name: str = "config"):
    """Compose the project config as `run.py` would, for tools and tests that do not go through @hydra.main.

    Outside @hydra.main there is no Hydra output folder, so `paths.output_dir` defaults to a fresh temporary one,
    removed at exit if nothing was written there (`behaviorlm predict` and `evaluate` compose a config per call and
    left an empty folder in the temporary directory each time).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from behaviorlm.config import register_configs

    register_configs()
    register_resolvers()
    overrides = list(overrides or [])
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        output_dir = tempfile.mkdtemp(prefix="behaviorlm-")
        atexit.register(_remove_if_empty, output_dir)
        overrides.append(f"paths.output_dir={output_dir}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def _remove_if_empty(folder: str) -> None:
    with contextlib.suppress(OSError):  # not empty (a job wrote its outputs there) or already gone: keep it
        os.rmdir(folder)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


KILL_AT_ENV = "BEHAVIORLM_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """Tests only: SIGKILL this process at the named point when BEHAVIORLM_TEST_KILL_AT names it (comma-separated),
    so a resume test interrupts at the same moment on every machine instead of racing a file-system poll.
    Points: <stage>:epoch_<N> (after that epoch's checkpoint), <stage>:epoch_<N>_batch_<B> (after a checkpoint
    inside epoch N, B batches into it; train.checkpoint_interval_s decides which are written), <stage>:trained
    (after the last epoch, before the stage's cache entry), <stage>:cached (after the entry, before the next
    stage), difficulty_selection:scoring,
    sweep:after_job_<N> (a multirun, once job N has ended and the progress line is out)."""
    if name in os.environ.get(KILL_AT_ENV, "").split(","):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Bad data or config ends the program with one clear line on stderr and exit status 2, not a traceback."""
    from behaviorlm.config import ConfigError
    from behaviorlm.data.logs import DataError
    from behaviorlm.models import ModelUnavailableError

    try:
        yield
    except (DataError, ConfigError, ModelUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def provenance() -> dict[str, Any]:
    """Which code made a result, and where: library versions, in a git checkout the commit and whether it was dirty,
    and the kind of machine (a Zen 3 and a Zen 4 compute `model.precision=auto` in other precisions)."""
    import importlib.metadata
    import subprocess

    from behaviorlm.hardware import machine_kind

    versions = {}
    for package in ("behaviorlm", "torch", "transformers", "peft", "accelerate", "hydra-core", "omegaconf", "wandb"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    commit, dirty = None, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        if commit:
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout
            dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return {"versions": versions, "git_commit": commit, "git_dirty": dirty, "machine": machine_kind()}
