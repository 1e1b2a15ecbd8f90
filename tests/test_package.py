"""The built wheel works outside the checkout: `behaviorlm train` from another directory, with the configs shipped
in the package and a user's own config group composed over them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed into a folder of its own (no dependencies: they are this
    environment's), so that `import behaviorlm` cannot come from the checkout."""
    import shutil

    root = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools leaves build/ in the source tree, and a stale one would leak into later wheels
    source = root / "source"
    skip = (".git", ".venv", ".cache", ".whl", ".gguf_parts", "results", "mutants", "build", "outputs", "multirun",
            "*.egg-info")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(root / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("behaviorlm-*.whl"))
    target = root / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return target


def behaviorlm(site, cwd, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(site), "BEHAVIORLM_STAGE_CACHE": str(cwd / "stage-cache")}
    command = [sys.executable, "-c", "import sys, behaviorlm.cli as c; "
               f"assert c.__file__.startswith({str(site)!r}), c.__file__; c.main(sys.argv[1:])", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_trains_from_another_directory_with_packaged_configs(installed, tmp_path):
    assert (installed / "behaviorlm" / "conf" / "config.yaml").is_file()  # the configs are in the wheel
    result = behaviorlm(installed, tmp_path, "train", "experiment=smoke", "debug=fast",
                        "hydra.run.dir=out/plain")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "plain" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and 0 <= metrics["test/acc_overall"] <= 1


@pytest.mark.slow
def test_wheel_composes_a_users_own_data_config_from_config_dir(installed, tmp_path):
    from behaviorlm.data.dataset import load_dataset
    from behaviorlm.utils import compose_config

    events = load_dataset(compose_config(["data=synthetic"])).events
    events.rename(columns={"user": "uid", "time": "ts", "behavior": "action"}).to_csv(tmp_path / "log.csv",
                                                                                      index=False)
    (tmp_path / "my_conf" / "data").mkdir(parents=True)
    (tmp_path / "my_conf" / "data" / "my_log.yaml").write_text(
        "defaults:\n  - csv\n  - _self_\nname: my_log\npath: log.csv   # relative to where the command runs\n"
        "columns:\n  user: uid\n  time: ts\n  behavior: action\n")
    result = behaviorlm(installed, tmp_path, "train", "--config-dir", str(tmp_path / "my_conf"), "data=my_log",
                        "model=tiny_random", "logger=none", "debug=fast", "hydra.run.dir=out/mine")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "mine" / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["data"] == "my_log"


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["fsdp", "deepspeed_zero2", "deepspeed_zero3", "accelerate"])
def test_wheel_ships_the_accelerate_launch_configs(installed, tmp_path, launcher):
    """launcher=fsdp (and the other accelerate presets) name a launch config inside the package, so they compose and
    validate from an installed wheel, not only from a checkout."""
    code = ("from pathlib import Path; from behaviorlm.config import validate_config; "
            "from behaviorlm.utils import compose_config; "
            f"cfg = compose_config(['launcher={launcher}']); validate_config(cfg); print(cfg.launcher.config_file)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(installed)})
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.is_relative_to(installed), path
