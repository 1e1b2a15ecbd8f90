"""Scale-out: the Hydra job spawns torchrun / accelerate workers; N processes train like one.

The invariant (TRL's): with the same global batch, 2 processes take the same optimizer steps as 1 — the loss is
normalised by the global answer-token count and each rank trains on a strided slice of the same global batch.
Tolerance: stage losses agree to a relative 1e-4 (float reduction order differs), test accuracy to one sample.
"""

import json
import sys
from pathlib import Path

import pytest

from behaviorlm.config import ConfigError, validate_config
from behaviorlm.distributed import Dist
from behaviorlm.launch import worker_command
from conftest import ROOT, run_entrypoint

# Small but not trivial: two A-Tuning epochs with gradient accumulation (exercises no_sync), then B-Tuning.
TINY_RUN = ["model=tiny_random", "data=synthetic", "logger=none", "cache=off", "data.max_train_samples=96",
            "data.max_val_samples=16", "data.max_test_samples=32", "train.batch_size=8", "train.grad_accum=2",
            "train.early_stopping=false", "train.a_tuning.max_epochs=2", "train.b_tuning.max_epochs=1",
            "samples_per_behavior=4", "selection.max_scored_per_behavior=4"]


@pytest.mark.parametrize("world, n", [(1, 5), (2, 5), (3, 7), (4, 2), (2, 0)])
def test_shards_cover_every_item_once_with_equal_lengths(world, n):
    shards = [Dist(rank=r, world=world).shard_indices(n) for r in range(world)]
    assert len({len(s) for s in shards}) <= 1  # equal lengths: every rank runs the same number of forwards
    # Reassemble as Dist.gather does: item i comes from rank i % world, position i // world.
    assert [shards[i % world][i // world] for i in range(n)] == list(range(n))


def test_torchrun_command(compose, tmp_path):
    cfg = compose("launcher=torchrun", "launcher.nproc_per_node=4", output_dir=str(tmp_path))
    command = worker_command(cfg, tmp_path / "worker_config.yaml", "full")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in command and "--standalone" in command
    assert command[command.index("behaviorlm.worker") - 1] == "-m"
    multi = compose("launcher=torchrun", "launcher.nnodes=2", "launcher.node_rank=1", "launcher.master_addr=n001",
                    output_dir=str(tmp_path))
    command = worker_command(multi, tmp_path / "worker_config.yaml", "full")
    assert "--standalone" not in command
    assert {"--nnodes=2", "--node_rank=1", "--master_addr=n001", "--master_port=29500"} <= set(command)


@pytest.mark.parametrize("preset", ["accelerate", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_accelerate_presets_resolve_to_files_in_the_package(compose, tmp_path, preset):
    cfg = compose(f"launcher={preset}", "launcher.nproc_per_node=4", "launcher.nnodes=2", output_dir=str(tmp_path))
    validate_config(cfg)
    command = worker_command(cfg, tmp_path / "worker_config.yaml", "full")
    config_file = command[command.index("--config_file") + 1]
    assert config_file.startswith(str(ROOT / "behaviorlm" / "accelerate_configs")) and Path(config_file).is_file()
    assert "--num_processes=8" in command and "--num_machines=2" in command


def test_deepspeed_refuses_gradient_accumulation(compose, tmp_path):
    cfg = compose("launcher=deepspeed_zero3", "train.grad_accum=4", output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="train.grad_accum"):
        worker_command(cfg, tmp_path / "worker_config.yaml", "full")


@pytest.mark.parametrize("overrides, key", [
    (["launcher=accelerate", "launcher.config_file=missing.yaml"], "launcher.config_file"),
    (["launcher=torchrun", "method=popularity"], "method"),
    (["launcher=torchrun", "launcher.nproc_per_node=0"], "launcher.nproc_per_node"),
    (["launcher=torchrun", "launcher.node_rank=2"], "launcher.node_rank"),
])
def test_bad_launcher_settings_name_the_key(compose, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(compose(*overrides))


def _run(tmp_path, name, *launcher):
    out = tmp_path / name
    result = run_entrypoint([*TINY_RUN, *launcher, f"hydra.run.dir={out}"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, json.loads((out / "metrics.json").read_text())


def _assert_same_training(one, many):
    for key in ("a_tuning/final_train_loss", "b_tuning/final_train_loss"):
        assert many[key] == pytest.approx(one[key], rel=1e-4), key
    for key in ("test/acc_overall", "test/acc_anchor", "test/acc_tail", "b_tuning/val/acc_overall"):
        if key in one:
            assert abs(many[key] - one[key]) <= 1 / 32 + 1e-9, key
    assert one["n_processes"] == 1 and many["n_processes"] == 2
    assert one["engine"] == "NO" and many["engine"] == "MULTI_CPU"  # DDP over gloo


@pytest.mark.slow
def test_two_torchrun_processes_train_like_one(tmp_path):
    _, one = _run(tmp_path, "local")
    out, two = _run(tmp_path, "torchrun", "launcher=torchrun", "launcher.nproc_per_node=2")
    _assert_same_training(one, two)
    assert two["status"] == "completed"
    # Rank 0 alone wrote the run folder; the Hydra job wrote the config the workers read.
    assert (out / "worker_config.yaml").exists() and (out / "adapter").is_dir()
    assert "rank 1/2" not in (out / "worker.log").read_text()


@pytest.mark.slow
def test_accelerate_launcher_on_cpu_matches_one_process(tmp_path):
    _, one = _run(tmp_path, "local")
    # The DDP preset (multi_gpu.yaml): `accelerate launch` spawns torchrun-style workers, which use gloo on CPU.
    _, two = _run(tmp_path, "accelerate", "launcher=accelerate", "launcher.nproc_per_node=2")
    _assert_same_training(one, two)


def test_gpu_lease_script_works_from_the_repository_root_wherever_it_is_called_from(tmp_path):
    """The lease script reads .whl/ and .gguf_parts/ and writes results/ at the project root; it moved to tools/gpu
    once and went on resolving tools/ as the root, which only a lent GPU would have shown."""
    import subprocess

    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu" / "gpu_lease.sh"), "no-such-phase"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown phase 'no-such-phase'" in result.stdout and "not the repository root" not in result.stdout


@pytest.mark.slow
def test_gpu_check_script_runs_its_code_path_on_cpu(tmp_path):
    """The GPU check is only run for real on a lent GPU; its code path must not rot meanwhile."""
    import subprocess

    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, "-m", "tools.gpu.gpu_check", "--device", "cpu", "--models",
                             "tiny_random", "--samples", "4", "--scoring-batches", "1", "4", "--train-steps", "3",
                             "--shapes", "smollm2_135m",
                             "--shape-batch", "1", "--seq-len", "16", "--shape-variants", "default",
                             "nodropout+profile", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    kernels, = report["kernels"]
    assert kernels["exact_samples_per_s"] > 0 and kernels["beam_samples_per_s"] > 0
    assert [(s["mode"], s["prompts_per_forward"]) for s in kernels["scoring"]] == [
        ("exact", 1), ("beam", 1), ("exact", 4), ("beam", 4)]
    assert kernels["exact_samples_per_s"] == max(s["prompts_per_s"] for s in kernels["scoring"] if s["mode"] == "exact")
    assert kernels["train_samples_per_s"] > 0
    run, = report["runs"]
    assert run["returncode"] == 0 and run["n_processes"] == 1
    # the figure it reports is the run's own test accuracy, read back from the run folder
    recorded = json.loads((out.parent / "gpu_runs" / "tiny_random_1proc" / "metrics.json").read_text())
    assert run["test_acc_overall"] == recorded["test/acc_overall"]
    default, variant = report["shapes"]
    assert (default["variant"], variant["variant"]) == ("default", "nodropout+profile")
    assert default["lora_params"] == variant["lora_params"] > 0  # the same adapter, only dropout differs
    for shape in report["shapes"]:
        assert 0 < shape["mfu_vs_measured_peak"] < 1 and shape["train_tokens_per_s"] > 0
    assert variant["top_kernels"] and all(k["ms_per_step"] >= 0 for k in variant["top_kernels"])


@pytest.mark.slow
def test_torchrun_workers_read_a_relative_data_path_from_where_the_command_ran(tmp_path):
    """The workers start in the project root; a `data.path` relative to the user's directory must still be found
    (every path key is made absolute before they start)."""
    from behaviorlm.data.dataset import load_dataset
    from behaviorlm.utils import compose_config

    events = load_dataset(compose_config(["data=synthetic"])).events
    events.rename(columns={"user": "user_id", "time": "timestamp"}).to_csv(tmp_path / "log.csv", index=False)
    args = [*(a for a in TINY_RUN if a != "data=synthetic"), "data=csv", "data.path=log.csv", "launcher=torchrun",
            "launcher.nproc_per_node=2", "hydra.run.dir=out"]
    result = run_entrypoint(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["n_processes"] == 2 and metrics["data"] == "log"
