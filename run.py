"""BehaviorLM experiments: one entrypoint for every stage order, ablation and baseline.

    python run.py                                    # BehaviorLM on NYC with SmolLM2 (paper settings)
    python run.py experiment=quick_cpu               # the ~10-minute CPU run behind `make run`
    python run.py -m aux_ratio=0,0.05,0.2            # a sweep; each job writes its own metrics.json
    python run.py ablation=few_shot                  # a paper ablation as a ready-made sweep

The same as `behaviorlm train ...` (behaviorlm/train.py), from a checkout.
"""

import sys

import hydra
from omegaconf import DictConfig

from behaviorlm.train import check_printed_config, experiment


@hydra.main(version_base="1.3", config_path="behaviorlm/conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return experiment(cfg)


if __name__ == "__main__":
    check_printed_config(sys.argv[1:])
    main()
