"""The Hydra job as a launcher: write the resolved config, spawn torchrun or `accelerate launch` on
`behaviorlm.worker`, wait, and return what rank 0 wrote.

Why not `@hydra.main` under torchrun: every rank would re-compose the config and get its own output folder, and
the injected `--local_rank` breaks Hydra's argument parsing. So Hydra stays the outer orchestrator (sweeps,
output folders, SLURM through submitit) and the workers read one plain YAML file (LLaMA-Factory and axolotl work
the same way).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from behaviorlm.config import ConfigError
from behaviorlm.utils import atomic_write_text

log = logging.getLogger(__name__)
WORKER_CONFIG = "worker_config.yaml"


def resolve_config_file(cfg: DictConfig) -> str:
    """The accelerate config as an absolute path (a relative one is taken from the project root)."""
    path = Path(cfg.launcher.config_file)
    if not path.is_absolute() and not path.exists():
        path = Path(cfg.paths.root_dir) / path
    return str(path.resolve())


def worker_command(cfg: DictConfig, config_path: Path, variant: str) -> list[str]:
    launcher = cfg.launcher
    worker = ["-m", "behaviorlm.worker", str(config_path), "--variant", variant]
    if launcher.name == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={launcher.nproc_per_node}",
                   f"--nnodes={launcher.nnodes}"]
        if launcher.nnodes == 1:
            command.append("--standalone")  # a free port of its own: parallel sweep jobs on one node coexist
        else:
            command += [f"--node_rank={launcher.node_rank}", f"--master_addr={launcher.master_addr}",
                        f"--master_port={launcher.master_port}"]
        return command + worker
    config_file = resolve_config_file(cfg)
    engine = OmegaConf.load(config_file)
    if engine.get("distributed_type") == "DEEPSPEED" and cfg.train.grad_accum != 1:
        raise ConfigError(f"config key 'train.grad_accum' = {cfg.train.grad_accum} is out of range: expected 1 with "
                          f"DeepSpeed ({config_file}), which steps inside backward; raise train.batch_size instead")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
               f"--num_processes={launcher.nproc_per_node * launcher.nnodes}", f"--num_machines={launcher.nnodes}",
               f"--machine_rank={launcher.node_rank}", f"--mixed_precision={launcher.mixed_precision}"]
    if launcher.nnodes > 1:
        command += [f"--main_process_ip={launcher.master_addr}", f"--main_process_port={launcher.master_port}"]
    return command + worker


def launch_workers(cfg: DictConfig, out: Path, variant: str) -> dict[str, Any]:
    """Run the job on `launcher.nproc_per_node` x `launcher.nnodes` worker processes; return rank 0's metrics."""
    config_path = out / WORKER_CONFIG
    # Resolve here, inside the Hydra job: ${hydra:...} interpolations (the output folder) exist only in it.
    atomic_write_text(config_path, OmegaConf.to_yaml(cfg, resolve=True))
    command = worker_command(cfg, config_path, variant)
    log.info("launching %d x %d workers: %s", cfg.launcher.nnodes, cfg.launcher.nproc_per_node, " ".join(command))
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # share the cores between the workers of this node instead of oversubscribing
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.launcher.nproc_per_node))
    (out / "metrics.json").unlink(missing_ok=True)  # what we return below must come from these workers
    returncode = subprocess.run(command, env=env, cwd=cfg.paths.root_dir).returncode
    if returncode != 0:
        raise RuntimeError(f"{cfg.launcher.name} workers exited with status {returncode}; their log: "
                           f"{out / 'worker.log'}")
    if cfg.launcher.node_rank != 0:  # rank 0 lives on node 0, which writes the results
        return {"test/acc_overall": float("nan"), "status": "completed"}
    metrics = json.loads((out / "metrics.json").read_text())
    runtime = out / "run_info.json"
    if runtime.exists():
        metrics.update(json.loads(runtime.read_text()))
    return metrics
