"""Experiment tracking: W&B when `logger=wandb`, nothing otherwise. metrics.json is written regardless.

The W&B mode is `logger.mode`: auto (the default) is online for a user with W&B credentials and offline otherwise,
WANDB_MODE deciding when it is set; one line per process says which and why. A run is always closed, with exit
code 1 when the job raised, so that the next job of a multirun cannot silently reuse it (`FinishLeftoverRuns` is the
Hydra-callback safety net for the same pitfall).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class Tracker:
    """A thin facade so the pipeline never checks which logger is on."""

    def __init__(self, run=None):
        self.run = run

    def where(self) -> dict[str, Any]:
        """Where this job logged (entity, project, group, run id): collect.py and the dashboard read it from
        run_info.json, so the sweep summary lands in the jobs' own group."""
        if self.run is None:
            return {}
        return {"wandb/entity": self.run.entity, "wandb/project": self.run.project, "wandb/group": self.run.group,
                "wandb/run_id": self.run.id, "wandb/run_name": self.run.name}

    def log(self, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        if self.run is not None:
            clean = {k: v for k, v in metrics.items() if v is not None}
            self.run.log(clean, step=step) if step is not None else self.run.log(clean)

    def summary(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            for key, value in metrics.items():
                if value is not None:
                    self.run.summary[key] = value

    def table(self, key: str, frame: pd.DataFrame) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame.reset_index(drop=True))})

    def artifact(self, kind: str, paths: list[Path], aliases: list[str]) -> Optional[str]:
        """Log files and folders as one artifact of `kind` named after the run; returns `name:alias` (None: off)."""
        if self.run is None:
            return None
        import wandb

        artifact = wandb.Artifact(f"{kind}-{self.run.id}", type=kind)
        for path in paths:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            elif path.exists():
                artifact.add_file(str(path))
        self.run.log_artifact(artifact, aliases=aliases)
        return f"{artifact.name}:{aliases[0]}"

    def image(self, key: str, path: str | Path) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})


def has_wandb_credentials() -> bool:
    """An API key in WANDB_API_KEY or in the netrc entry `wandb login` writes for the W&B host."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(entry and entry[2])


_said_mode: set[tuple[str, str]] = set()


def wandb_mode(configured: str = "auto") -> str:
    """online | offline | disabled: `logger.mode` when it is online or offline; under auto, WANDB_MODE when set,
    else online with credentials and offline without (saying so once per process)."""
    if configured != "auto":
        mode, why = configured, f"logger.mode={configured}"
    elif os.environ.get("WANDB_MODE"):
        mode, why = os.environ["WANDB_MODE"], f"WANDB_MODE={os.environ['WANDB_MODE']}"
    elif has_wandb_credentials():
        mode, why = "online", "W&B credentials found (logger.mode=auto)"
    else:
        mode, why = "offline", "no W&B credentials (logger.mode=auto); after `wandb login`, `behaviorlm sync DIR` " \
                               "uploads these runs"
    if (mode, why) not in _said_mode:
        _said_mode.add((mode, why))
        log.info("W&B %s: %s", mode, why)
    return mode


def _group(cfg: DictConfig) -> Optional[str]:
    if cfg.logger.group:
        return cfg.logger.group
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode.name == "MULTIRUN":  # <task_name>-<sweep time>: a bare timestamp finds nothing
            return f"{cfg.task_name}-{Path(hydra_cfg.sweep.dir).name}"
    except ValueError:  # not inside a Hydra job
        pass
    return None


def _hydra_job() -> tuple[dict[str, Any], Optional[str]]:
    """(the config-group choices, the job's overrides as one short string) inside a Hydra job; ({}, None) outside."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return {}, None
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra")}
    return choices, hydra_cfg.job.override_dirname or None


def logged_where(job_dir: Path, fallback_group: str) -> dict[str, Any]:
    """Where a finished job logged to W&B: its own record in run_info.json (`Tracker.where`), else what its
    Hydra config says (a job run with logger=none, or before the record existed)."""
    info_path, config_path = job_dir / "run_info.json", job_dir / ".hydra" / "config.yaml"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if info.get("wandb/group"):
        return {"project": info["wandb/project"], "entity": info.get("wandb/entity"), "group": info["wandb/group"]}
    if not config_path.exists():
        return {"project": None, "entity": None, "group": fallback_group}
    cfg = OmegaConf.load(config_path)
    return {"project": cfg.logger.project or f"behaviorlm-{cfg.data.name}", "entity": cfg.logger.entity,
            "group": cfg.logger.group or fallback_group}


def run_name(override_dirname: Optional[str], job_type: str) -> str:
    """A readable run name from the job's overrides: `stage_order=joint,seed=1` -> `joint seed=1`."""
    if not override_dirname:
        return job_type
    skip = ("logger.", "experiment=", "ablation=", "+ablation=", "hparams_search=")  # the same for every job
    parts = [p for p in override_dirname.split(",") if not p.startswith(skip)]
    return " ".join(p.split("=", 1)[1] if p.startswith(("stage_order=", "method=")) else p for p in parts) or job_type


def run_config(cfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """The resolved config plus the Hydra choices (variant, experiment, ...), so a dashboard can group by them."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["hydra_choices"] = choices
    config["variant"] = choices.get("variant") or "full"
    return config


@contextlib.contextmanager
def tracking(cfg: DictConfig, job_type: str = "behaviorlm") -> Iterator[Tracker]:
    if cfg.logger.name != "wandb":
        yield Tracker()
        return
    import wandb

    choices, overrides = _hydra_job()
    tags = [*cfg.logger.tags, f"method:{cfg.method}", f"stage_order:{cfg.stage_order}", f"model:{cfg.model.name}"]
    settings = wandb.Settings(silent=True, console="off")
    with wandb.init(project=cfg.logger.project or f"behaviorlm-{cfg.data.name}", entity=cfg.logger.entity,
                    group=_group(cfg), job_type=job_type, name=run_name(overrides, job_type), tags=tags,
                    config=run_config(cfg, choices), dir=cfg.paths.output_dir,
                    mode=wandb_mode(cfg.logger.mode), settings=settings) as run:
        define_stage_axes(run)
        yield Tracker(run)


def define_stage_axes(run) -> None:
    """Each stage's curves get their own x axis: training loss against the stage's optimizer step, validation
    metrics against its epoch (W&B's global step would splice the stages into one line)."""
    from behaviorlm.stage_plan import TUNING_STAGES

    for stage in TUNING_STAGES:
        run.define_metric(f"{stage}/train/step", hidden=True)
        run.define_metric(f"{stage}/train/*", step_metric=f"{stage}/train/step")
        run.define_metric(f"{stage}/epoch", hidden=True)
        run.define_metric(f"{stage}/val/*", step_metric=f"{stage}/epoch")


class FinishLeftoverRuns(Callback):
    """Hydra callback: close any W&B run a job left open (a crash inside a launcher that reuses processes)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is not None:
            failed = getattr(job_return, "status", None) is not None and job_return.status.name == "FAILED"
            log.warning("closing a W&B run the job left open (failed=%s)", failed)
            wandb.finish(exit_code=1 if failed else 0)
