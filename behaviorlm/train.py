"""The experiment entrypoint shipped with the package: `behaviorlm train [overrides]` or
`python -m behaviorlm train [overrides]`, from any directory, with the configs inside the package
(`pkg://behaviorlm.conf`). Hydra's own flags work as with run.py: `-m` for a sweep, `--config-dir DIR` for a user's
own config groups (their `data/` or `experiment/` files, composed over ours), `--cfg job` to print the config.

    behaviorlm train model=tiny_random data=synthetic logger=none
    behaviorlm train --config-dir ./my_conf data=my_log          # ./my_conf/data/my_log.yaml
    behaviorlm train -m aux_ratio=0,0.05,0.2

`run.py` at the root of a checkout is the same function under the checkout's path. Outputs go under the working
directory for `behaviorlm train` (editable install or wheel) and under the checkout for run.py and make.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from behaviorlm.config import register_configs, validate_config
from behaviorlm.utils import compose_config, exit_on_user_error, register_resolvers

register_configs()
register_resolvers()


def experiment(cfg: DictConfig) -> float:
    """One job: run the pipeline and return what a sweeper optimises (a validation metric, never the test)."""
    from hydra.core.hydra_config import HydraConfig

    from behaviorlm.pipeline import optimized_value, run

    if HydraConfig.get().mode.name == "MULTIRUN":
        # Let a failing job raise: Hydra records it as failed and the other jobs still run.
        return optimized_value(cfg, run(cfg))
    with exit_on_user_error():  # a single run ends on bad input with one line and exit status 2
        return optimized_value(cfg, run(cfg))


def check_printed_config(argv: list[str]) -> None:
    """`--cfg job` prints the config without running a job, so the range checks would never see it: run them
    first, so that a printed config is one that would run (one line and exit status 2 otherwise)."""
    printing = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
    if not printing or any(a in ("-m", "--multirun") for a in argv):
        return
    overrides = [a for a in argv if "=" in a and not a.startswith("-") and not a.startswith("hydra.")]
    try:
        cfg = compose_config(overrides)
    except Exception:  # a typo or unknown key: Hydra itself reports it, with its own one line and exit status
        return
    with exit_on_user_error():
        validate_config(cfg)


@hydra.main(version_base="1.3", config_path="pkg://behaviorlm.conf", config_name="config")
def _packaged(cfg: DictConfig) -> float:
    return experiment(cfg)


def main(argv: list[str]) -> None:
    """`behaviorlm train ARGS`: Hydra reads sys.argv, so the subcommand is taken off it first."""
    from pathlib import Path

    from behaviorlm import utils

    utils.WORK_DIR = Path.cwd()  # an installed command writes outputs/ and multirun/ where it is run
    check_printed_config(argv)
    sys.argv = ["behaviorlm train", *argv]
    _packaged()
