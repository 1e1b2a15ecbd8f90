"""BehaviorLM experiments: one entrypoint for every stage order, ablation and baseline.

    python run.py                                    # BehaviorLM on NYC with SmolLM2 (paper settings)
    python run.py experiment=quick_cpu               # the ~10-minute CPU run behind `make run`
    python run.py -m aux_ratio=0,0.05,0.2            # a sweep; each job writes its own metrics.json
    python run.py +ablation=few_shot                 # a paper ablation as a ready-made sweep
"""

import sys

import hydra
from omegaconf import DictConfig

from behaviorlm.config import register_configs, validate_config
from behaviorlm.utils import compose_config, exit_on_user_error, register_resolvers

register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from behaviorlm.pipeline import optimized_value, run

    # What a sweeper optimises is a validation metric (optimized_metric), never the test set.
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
    with exit_on_user_error():
        validate_config(compose_config(overrides))


if __name__ == "__main__":
    check_printed_config(sys.argv[1:])
    main()
