"""Reliability: resume after SIGKILL, crash isolation in a multirun, determinism, offline operation."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_entrypoint

from behaviorlm.utils import KILL_AT_ENV

SMOKE = ["experiment=smoke", "train.a_tuning.max_epochs=4", "train.b_tuning.max_epochs=3",
         "samples_per_behavior=8"]


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def uninterrupted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("reference")
    result = run_entrypoint(SMOKE + [f"hydra.run.dir={folder}/job"],
                            env={"BEHAVIORLM_STAGE_CACHE": str(folder / "cache")})
    assert result.returncode == 0, result.stderr[-2000:]
    return metrics_of(folder / "job")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return uninterrupted(tmp_path_factory)


# Where a resumed run must end exactly as the uninterrupted one: the process is SIGKILLed at a named point by the
# test hook (behaviorlm.utils.kill_point), the same moment on every machine whatever its load. Each point is paired
# with what the next run must say when it picks up from there.
KILL_POINTS = {
    "a_tuning:epoch_1": "a_tuning: resuming after epoch 1",          # mid-stage: the epoch checkpoint
    "a_tuning:epoch_2_batch_2": "a_tuning: resuming in epoch 2 after batch 2",  # mid-epoch (checkpoint_interval_s)
    "a_tuning:trained": "a_tuning: resuming after epoch",            # last epoch done, no cache entry yet
    "a_tuning:cached": "a_tuning restored from the stage cache",     # between stages
    "difficulty_selection:scoring": "a_tuning restored from the stage cache",
    "b_tuning:epoch_1": "b_tuning: resuming after epoch 1",
    "b_tuning:epoch_2_batch_1": "b_tuning: resuming in epoch 2 after batch 1",
    "b_tuning:trained": "b_tuning: resuming after epoch",
}


@pytest.mark.slow
def test_a_run_killed_at_every_point_in_turn_resumes_to_the_same_metrics(tmp_path, reference):
    # One run killed at each point in turn, every attempt resuming the last one's state: a resume that loses or
    # changes anything (an optimizer moment, an RNG state, a selection) carries into the metrics compared at the end,
    # and a run resumed from a resume is the harder case. One chain instead of a fresh run per point: 9 runs, not 16.
    # The chain checkpoints after every optimizer step, the reference at epoch ends only: checkpoints change nothing.
    env, every_step = {"BEHAVIORLM_STAGE_CACHE": str(tmp_path / "cache")}, "train.checkpoint_interval_s=0"
    said_by_the_next_run = None
    for attempt, point in enumerate(KILL_POINTS):
        run = run_entrypoint(SMOKE + [every_step, f"hydra.run.dir={tmp_path}/{attempt}"],
                             env={**env, KILL_AT_ENV: point})
        assert run.returncode == -signal.SIGKILL, (point, run.returncode, run.stderr[-2000:])
        assert not (tmp_path / str(attempt) / "metrics.json").exists(), point
        if said_by_the_next_run:
            assert said_by_the_next_run in run.stdout + run.stderr, (point, (run.stdout + run.stderr)[-3000:])
        said_by_the_next_run = KILL_POINTS[point]
    result = run_entrypoint([*SMOKE, every_step, f"hydra.run.dir={tmp_path}/last"], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert said_by_the_next_run in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert metrics_of(tmp_path / "last") == reference


def test_the_kill_hook_fires_only_at_the_named_point(monkeypatch):
    from behaviorlm import utils

    killed = []
    monkeypatch.setattr(utils.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    monkeypatch.setenv(KILL_AT_ENV, "a_tuning:epoch_2,b_tuning:cached")
    for point in ("a_tuning:epoch_1", "a_tuning:epoch_2", "b_tuning:cached", "b_tuning"):
        utils.kill_point(point)
    assert killed == [(os.getpid(), signal.SIGKILL)] * 2
    monkeypatch.delenv(KILL_AT_ENV)
    utils.kill_point("a_tuning:epoch_2")
    assert len(killed) == 2


@pytest.mark.slow
def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from behaviorlm.utils import atomic_write, atomic_write_text

    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")

    def half_then_fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    atomic_write(target, lambda tmp: Path(tmp).write_text("new\n"))
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_same_command_twice_gives_identical_metrics(tmp_path, reference):
    result = run_entrypoint([*SMOKE, "cache=off", f"hydra.run.dir={tmp_path}/again"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert metrics_of(tmp_path / "again") == reference


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    good = ROOT / "behaviorlm" / "bundled" / "conversations" / "alpaca_en_demo.json.gz"
    result = run_entrypoint(["-m", "experiment=smoke", "debug=fast", "logger=wandb",
                             f"aux.path={good},{tmp_path}/missing.json,{good}", f"hydra.sweep.dir={tmp_path}/sweep"],
                            env={"WANDB_MODE": "offline"})
    assert result.returncode != 0
    statuses = {d.name: metrics_of(d)["status"] for d in (tmp_path / "sweep").iterdir() if d.name.isdigit()}
    assert statuses == {"0": "completed", "1": "failed", "2": "completed"}
    assert "missing.json" in metrics_of(tmp_path / "sweep" / "1")["error"]
    assert "2/3 jobs completed" in result.stderr and "FAILED job 1" in result.stderr
    assert len(list((tmp_path / "sweep").glob("*/wandb/offline-run-*"))) == 3
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["COMPLETED", "FAILED", "COMPLETED"]
    assert (summary["planned"], summary["done"], summary["completed"], summary["failed"]) == (3, 3, 2, 1)
    assert "[sweep] 3/3 done (2 completed, 1 failed)" in result.stdout


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


SOCKET_GUARD = """
import ipaddress, os, socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _local(sock, address):
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host).is_loopback
    except ValueError:
        return False


def _refuse(sock, address):
    with open(os.environ["SOCKET_GUARD_LOG"], "a") as log:
        log.write(repr(address) + "\\n")
    raise OSError(f"network refused by the test's socket guard: {address!r}")


def connect(sock, address):
    return _connect(sock, address) if _local(sock, address) else _refuse(sock, address)


def connect_ex(sock, address):
    return _connect_ex(sock, address) if _local(sock, address) else _refuse(sock, address)


socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
"""


@pytest.mark.slow
def test_runs_with_every_outside_connection_refused(tmp_path):
    """Any user can run this one (no privileges): a socket guard, loaded at interpreter start through
    sitecustomize, refuses every non-loopback connection and logs it; the run must complete without trying one."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    attempts = tmp_path / "attempts.log"
    env = {**os.environ, "WANDB_MODE": "offline", "SOCKET_GUARD_LOG": str(attempts),
           "PYTHONPATH": os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                           capture_output=True, text=True, env=env, timeout=60)
    assert probe.returncode != 0 and "socket guard" in probe.stderr  # the guard is really loaded
    attempts.unlink()
    command = [sys.executable, str(ROOT / "run.py"), "experiment=smoke", "debug=fast", "logger=wandb",
               f"hydra.run.dir={tmp_path}/job"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert metrics_of(tmp_path / "job")["status"] == "completed"
    assert not attempts.exists(), attempts.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="`unshare -n` is not permitted here (needs CAP_SYS_ADMIN); "
                                               "test_runs_with_every_outside_connection_refused covers it")
def test_runs_without_any_network(tmp_path):
    command = ["unshare", "-n", sys.executable, str(ROOT / "run.py"), "experiment=smoke", "debug=fast",
               "logger=wandb", f"hydra.run.dir={tmp_path}/job"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert metrics_of(tmp_path / "job")["status"] == "completed"
    assert list((tmp_path / "job" / "wandb").glob("offline-run-*"))
