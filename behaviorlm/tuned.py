"""A behavior model outside a job, for the measurements and studies that score or train one directly.

    cfg, dataset, bm = tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0"], adapter="results/bench_adapter")
    cfg, dataset, bm = tuned_behavior_model(run_dir="outputs/behaviorlm/2026-12-03_10-00-00")   # a run's own

The config is composed as `run.py` would (logging off), the dataset loaded, the backbone built with a fresh LoRA,
the prompts and the scorer as the pipeline makes them; then a tuned adapter is loaded: `adapter` (a folder holding
`adapter_model.safetensors`), or a run folder's `adapter/` with the config composed from that run's own overrides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence



def load_adapter(model, folder: str | Path) -> None:
    """The LoRA weights of `folder/adapter_model.safetensors` into the model's (same-shaped) adapter."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(Path(folder) / "adapter_model.safetensors")))


def run_overrides(run_dir: str | Path) -> list[str]:
    """The overrides a run folder was made with (Hydra's `.hydra/overrides.yaml`)."""
    from behaviorlm.sweeps import override_lines

    lines = override_lines(Path(run_dir))
    if lines is None:
        raise FileNotFoundError(f"'{run_dir}' has no .hydra/overrides.yaml: not a run folder made by run.py")
    return lines


def tuned_behavior_model(overrides: Sequence[str] = (), adapter: Optional[str | Path] = None,
                         run_dir: Optional[str | Path] = None):
    """(config, dataset, behavior model) composed from `overrides` (after a run folder's own, when given), with
    `adapter` or the run's `adapter/` loaded; without either the LoRA is the fresh, untrained one."""
    from behaviorlm.data.dataset import load_dataset
    from behaviorlm.pipeline import build_behavior_model
    from behaviorlm.utils import compose_config

    base = run_overrides(run_dir) if run_dir is not None else []
    keep = [o for o in base if not o.startswith(("hydra.", "logger"))]
    cfg = compose_config([*keep, "logger=none", *overrides])
    dataset = load_dataset(cfg)
    bm, _ = build_behavior_model(cfg, dataset, [])
    folder = adapter if adapter is not None else (Path(run_dir) / "adapter" if run_dir is not None else None)
    if folder is not None:
        load_adapter(bm.model, folder)
    return cfg, dataset, bm
