"""BehaviorLM experiments: one entrypoint for every stage order, ablation and baseline.

    python run.py                                    # BehaviorLM on NYC with SmolLM2 (paper settings)
    python run.py experiment=quick_cpu               # the ~10-minute CPU run behind `make run`
    python run.py -m aux_ratio=0,0.05,0.2            # a sweep; each job writes its own metrics.json
    python run.py +ablation=few_shot                 # a paper ablation as a ready-made sweep
"""

import hydra
from omegaconf import DictConfig

from behaviorlm.config import register_configs
from behaviorlm.utils import exit_on_user_error, register_resolvers

register_configs()
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from behaviorlm.pipeline import run

    if HydraConfig.get().mode.name == "MULTIRUN":
        # Let a failing job raise: Hydra records it as failed and the other jobs still run.
        return run(cfg)["test/acc_overall"]
    with exit_on_user_error():  # a single run ends on bad input with one line and exit status 2
        return run(cfg)["test/acc_overall"]  # what a sweeper would optimise


if __name__ == "__main__":
    main()
