"""A multirun's values checked before its first job: closed choices, and every job's range checks.

Hydra starts the jobs of `python run.py -m ...` one after another; a value that only job 7 would refuse should stop
the sweep before job 0. `SweepValueCheck` is the callback that does so (behaviorlm/conf/hydra/default.yaml).
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import MISSING, DictConfig, OmegaConf

from behaviorlm.config import CHOICES, ConfigError, _check, allowed_text, validate_config


def check_sweep_values(values_by_key: dict[str, list[Any]]) -> None:
    for key, values in values_by_key.items():
        key = key.lstrip("+~")
        allowed = CHOICES.get(key)
        for value in values if allowed else ():
            known = value in allowed or str(value) in allowed or (value in ("null", "None") and None in allowed)
            _check(known, key, value, allowed_text(key))


def sweep_overrides(config: DictConfig) -> list:
    """A multirun's overrides, parsed, one per key, as the basic sweeper reads them: the sweeper's `params`, then
    the command line's, whose value replaces a `params` entry of the same key (`make paper-main ARGS=seed=0` runs
    one seed, not the three of `params`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    by_key = {override.get_key_element(): override for override in OverridesParser.create().parse_overrides(lines)}
    return list(by_key.values())


def sweep_values(config: DictConfig) -> dict[str, list[Any]]:
    """Every value each key takes in a multirun: command-line overrides and the sweeper's `params`."""
    found: dict[str, list[Any]] = {}
    for override in sweep_overrides(config):
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        found.setdefault(override.key_or_group, []).extend(values)
    return found


MAX_CHECKED_COMBINATIONS = 512  # a sweep's jobs whose whole config is range-checked before the first one starts


def check_sweep_ranges(config: DictConfig) -> None:
    """validate_config on the config of each job of a multirun (the first MAX_CHECKED_COMBINATIONS), with the swept
    values of plain keys applied: a value out of range (aux_ratio=1.5) stops the sweep before job 0, not at job N.
    Swept config groups (model=a,b) change the composition itself; their jobs are checked when they start."""
    import itertools

    job = OmegaConf.masked_copy(config, [key for key in config if key != "hydra"])
    swept: dict[str, list[Any]] = {}
    for override in sweep_overrides(config):
        key = override.key_or_group.lstrip("+~")
        if not override.is_sweep_override() or isinstance(OmegaConf.select(job, key, default=None), DictConfig) \
                or OmegaConf.select(job, key, default=MISSING) is MISSING:
            continue  # a single value is in the composed config already; a group or unknown key is Hydra's
        swept.setdefault(key, []).extend(override.sweep_iterator())
    if not swept:
        return
    combinations = itertools.product(*[[(key, value) for value in values] for key, values in swept.items()])
    for combination in itertools.islice(combinations, MAX_CHECKED_COMBINATIONS):
        candidate = job.copy()
        for key, value in combination:
            OmegaConf.update(candidate, key, value, merge=False)
        validate_config(candidate)


class SweepValueCheck(Callback):
    """Hydra callback: checks every swept value of a closed choice, and the range checks of every job's config,
    before the first job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import sys

        try:
            check_sweep_values(sweep_values(config))
            check_sweep_ranges(config)
        except ConfigError as err:  # Hydra turns a callback's exceptions into warnings: exit, as a bad run does
            print(f"error: {err} (no job of this sweep was started)", file=sys.stderr)
            raise SystemExit(2) from None
