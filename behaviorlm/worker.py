"""One process of a multi-process run. No Hydra here: it reads the config its Hydra job resolved and wrote.

    python run.py launcher=torchrun launcher.nproc_per_node=2 ...    # writes <run dir>/worker_config.yaml, then:
    torchrun --standalone --nproc_per_node=2 -m behaviorlm.worker <run dir>/worker_config.yaml
    accelerate launch --config_file behaviorlm/accelerate_configs/fsdp.yaml -m behaviorlm.worker \
        <run dir>/worker_config.yaml

`accelerate.Accelerator` reads the launcher's environment (RANK, WORLD_SIZE, ... or accelerate's own) and sets up
the process group: gloo on CPU, NCCL on GPUs. Rank 0 alone logs to W&B and writes the run folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from behaviorlm.config import BehaviorLMConfig
from behaviorlm.distributed import Dist

log = logging.getLogger("behaviorlm.worker")


def setup_logging(out: Path, dist: Dist) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if dist.is_main:
        handlers.append(logging.FileHandler(out / "worker.log"))
    logging.basicConfig(level=logging.INFO if dist.is_main else logging.WARNING, handlers=handlers, force=True,
                        format=f"[%(asctime)s][rank {dist.rank}/{dist.world}][%(name)s][%(levelname)s] - %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="behaviorlm.worker", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the resolved config a Hydra job wrote (worker_config.yaml)")
    parser.add_argument("--variant", default="full", help="the ablation variant name recorded in metrics.json")
    args = parser.parse_args(argv)
    # The schema again, so that types are checked exactly as in the Hydra job.
    cfg = OmegaConf.merge(OmegaConf.structured(BehaviorLMConfig), OmegaConf.load(args.config))

    from accelerate import Accelerator

    from behaviorlm.pipeline import run_job, write_failure

    import torch

    # cpu=True is what makes accelerate use gloo across CPU processes (it assumes GPUs otherwise).
    accelerator = Accelerator(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    dist = Dist.from_accelerator(accelerator)
    out = Path(cfg.paths.output_dir)
    setup_logging(out, dist)
    log.info("%d processes (%s), device %s", dist.world, accelerator.distributed_type, accelerator.device)
    requested = [name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}") == "true"]
    if requested and not dist.sharded:
        log.warning("the launch config asks for %s, which accelerate runs on GPUs only; this run uses %s",
                    requested[0], dist.engine)
    try:
        run_job(cfg, out, args.variant, dist)
    except Exception as err:
        log.exception("rank %d failed", dist.rank)
        if dist.is_main:
            write_failure(cfg, out, err)
        return 1
    finally:
        accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
