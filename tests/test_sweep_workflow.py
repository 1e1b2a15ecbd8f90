"""The sweep workflow as users run it: `run.py -m` -> collect / dashboard from anywhere -> sync -> export, a resumed
sweep, its progress line, the W&B mode, the CLI's commands, dataset names and where outputs go."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, run_entrypoint

from behaviorlm import cli, sweeps, sync, tracking
from behaviorlm.collect import main as collect_main
from behaviorlm.utils import KILL_AT_ENV

TINY_SWEEP = ["-m", "aux_ratio=0,0.05", "seed=0,1", "model=tiny_random", "data=synthetic", "debug=fast",
              "logger=wandb"]


def fake_job(folder: Path, overrides: list[str], metrics: dict) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides) + "\n")
    (folder / "metrics.json").write_text(json.dumps({"status": "completed", **metrics}))


@pytest.mark.parametrize("layout", ["hydra", "make"])
def test_both_folder_layouts_give_the_same_jobs_and_swept_key(tmp_path, monkeypatch, layout):
    sweep = tmp_path / "sweep"
    jobs = sweep / "runs" if layout == "make" else sweep
    values = [(lr, seed) for seed in (0, 1) for lr in (1e-4, 5e-4)] * 3  # 12 jobs: 10 and 11 sort after 2
    for num, (lr, seed) in enumerate(values):
        fake_job(jobs / str(num), [f"train.b_tuning.learning_rate={lr}", f"seed={seed + 2 * (num // 4)}",
                                   "experiment=nyc_cpu", f"logger.group=g{num}"],
                 {"seed": seed + 2 * (num // 4), "test/acc_overall": 0.2 + lr * 100, "test/acc_anchor": 0.3,
                  "test/acc_tail": 0.1 + lr * 100, "test/macro_f1": 0.1})
    assert [d.name for d in sweeps.job_dirs(sweep)] == [str(n) for n in range(12)]
    # the seed and the logging keys differ too, but they are not what the sweep varies
    assert sweeps.swept_keys(sweeps.job_dirs(sweep)) == ["train.b_tuning.learning_rate"]
    monkeypatch.chdir(tmp_path)  # from another directory
    collect_main([str(sweep)])
    table = (sweep / "table.md").read_text()
    assert "train.b_tuning.learning_rate" in table and "| 0.0005 | 6 |" in table
    jobs_csv = (sweep / "jobs.csv").read_text()
    assert jobs_csv.count("\n") == 13


def test_folders_beyond_the_last_sweeps_plan_are_left_out(tmp_path, capsys):
    for num in range(4):
        fake_job(tmp_path / str(num), [f"aux_ratio={num % 2}", f"seed={num // 2}"], {"aux_ratio": num % 2})
    (tmp_path / "sweep_summary.json").write_text(json.dumps({"planned": 2, "jobs": []}))
    assert [d.name for d in sweeps.job_dirs(tmp_path)] == ["0", "1"]
    assert "2 job folders beyond the 2 its last sweep planned" in capsys.readouterr().err
    # an older sweep's summary (a bare list of jobs, as results/paper-main keeps) plans nothing: every folder counts
    (tmp_path / "sweep_summary.json").write_text(json.dumps([{"job": 0, "status": "COMPLETED"}]))
    assert [d.name for d in sweeps.job_dirs(tmp_path)] == ["0", "1", "2", "3"]


SCORES = {"test/acc_overall": 0.2, "test/acc_anchor": 0.3, "test/acc_tail": 0.05, "test/macro_f1": 0.1}


def test_collect_flags_a_sweep_computed_in_two_precisions_and_refuses_to_pair_across_them(tmp_path, capsys):
    # seeds 0 and 1 on a bf16 machine, seed 2 on an fp32 one, one job without the record (an older run)
    computes = {0: ("cpu", "bfloat16"), 1: ("cpu", "bfloat16"), 2: ("cpu", "float32")}
    for num, (order, seed) in enumerate([(o, s) for s in (0, 1, 2) for o in ("joint", "progressive")]):
        device, dtype = computes[seed]
        record = {} if num == 5 else {"device_type": device, "compute_dtype": dtype}
        fake_job(tmp_path / str(num), [f"stage_order={order}", f"seed={seed}"],
                 {"stage_order": order, "seed": seed, "test/samples_digest": "d", **SCORES, **record})
    collect_main([str(tmp_path)])  # no reference: the table is written, with the line that says so
    note = ("**Mixed compute**: the jobs ran as cpu/bfloat16 (seeds 0, 1); cpu/float32 (seeds 2); not recorded "
            "(seeds 2)")
    assert (tmp_path / "table.md").read_text().startswith(note)
    assert "warning: **Mixed compute**" in capsys.readouterr().out
    # seed 2's progressive job records nothing, so its pair is not checked; make it fp32 against a bf16 joint
    job = tmp_path / "4" / "metrics.json"
    job.write_text(job.read_text().replace('"float32"', '"bfloat16"'))
    (tmp_path / "5" / "metrics.json").write_text(json.dumps({
        "status": "completed", "stage_order": "progressive", "seed": 2, "test/samples_digest": "d", **SCORES,
        "device_type": "cpu", "compute_dtype": "float32"}))
    with pytest.raises(SystemExit, match=r"ran in different precisions for seeds \[2\] \(column compute: "
                                         r"cpu/float32 against cpu/bfloat16\)"):
        collect_main([str(tmp_path), "--reference", "joint"])


def test_collect_without_a_varying_override_asks_for_the_key(tmp_path):
    for num in range(2):
        fake_job(tmp_path / str(num), [f"seed={num}"], {"seed": num, "test/acc_overall": 0.2})
    with pytest.raises(SystemExit, match="name the metrics.json field with --key"):
        collect_main([str(tmp_path)])
    with pytest.raises(SystemExit, match="no job folder with a metrics.json"):
        collect_main([str(tmp_path / "empty")])


class _Return:
    def __init__(self, status, value=None):
        self.status = type("S", (), {"name": status})()
        self._return_value = value


def _job_config(tmp_path, num):
    return OmegaConf.create({"hydra": {"job": {"num": num}, "overrides": {"task": [f"aux_ratio={num}"]},
                                       "runtime": {"output_dir": str(tmp_path / str(num))}}})


def test_progress_line_counts_jobs_and_estimates_the_time_left(tmp_path, monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(sweeps, "clock", lambda: now[0])
    progress = sweeps.SweepProgress()
    progress.sweep_dir, progress.planned, progress.started = tmp_path, 12, 0.0
    sweeps.REUSED.add(str((tmp_path / "2").resolve()))
    for num, (status, start, end) in enumerate([("COMPLETED", 0, 600), ("FAILED", 600, 1200),
                                                 ("COMPLETED", 1200, 1201), ("COMPLETED", 1201, 1800)]):
        now[0] = start
        progress.on_job_start(_job_config(tmp_path, num))
        now[0] = end
        progress.on_job_end(_job_config(tmp_path, num), _Return(status, RuntimeError("boom")))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[sweep]")]
    assert lines[0] == "[sweep] 1/12 done (1 completed), 10 min elapsed, about 110 min left"
    assert lines[1] == "[sweep] 2/12 done (1 completed, 1 failed), 20 min elapsed, about 100 min left"
    # the reused job took a second: the estimate is the mean of the jobs that ran (600, 600, 599 s) x 8
    assert lines[3] == "[sweep] 4/12 done (2 completed, 1 reused, 1 failed), 30 min elapsed, about 80 min left"
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert {k: summary[k] for k in ("planned", "done", "completed", "reused", "failed")} == \
        {"planned": 12, "done": 4, "completed": 2, "reused": 1, "failed": 1}
    assert summary["jobs"][1]["error"] == "RuntimeError: boom"


def test_planned_jobs_is_the_product_of_the_swept_values():
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["aux_ratio=0,0.05,0.2", "seed=0,1", "model=x"]},
                                         "sweeper": {"params": {"stage_order": "a,b"}}}})
    assert sweeps.planned_jobs(config) == 12
    config.hydra.sweeper["n_trials"] = 5
    assert sweeps.planned_jobs(config) == 5


def test_grid_lists_the_jobs_in_the_basic_sweepers_order():
    # the params first, a command-line value in its key's place, the first key varying slowest: job 1 is seed 1
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["aux_ratio=0,0.05", "seed=0,1", "model=x"]},
                                         "sweeper": {"params": {"stage_order": "a,b", "seed": "0,1,2"}}}})
    jobs = sweeps.grid(config)
    assert len(jobs) == 8 == sweeps.planned_jobs(config)
    assert jobs[0] == {"stage_order": "a", "seed": "0", "aux_ratio": "0", "model": "x"}
    assert [(job["stage_order"], job["seed"], job["aux_ratio"]) for job in jobs[:4]] == \
        [("a", "0", "0"), ("a", "0", "0.05"), ("a", "1", "0"), ("a", "1", "0.05")]
    assert jobs[4]["stage_order"] == "b"
    # no grid to tell: an interval (Optuna's), or the trials of a sweeper that counts them
    config.hydra.overrides.task.append("lr=interval(0.0001,0.001)")
    assert sweeps.grid(config) is None and sweeps.planned_jobs(config) is None
    config.hydra.overrides.task.pop()
    config.hydra.sweeper["n_trials"] = 5
    assert sweeps.grid(config) is None and sweeps.planned_jobs(config) == 5


def test_wandb_mode_auto_follows_credentials_and_says_why(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    caplog.set_level("INFO", logger="behaviorlm.tracking")
    assert tracking.wandb_mode("auto") == "offline"
    assert "no W&B credentials" in caplog.text and "behaviorlm sync" in caplog.text
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    os.chmod(tmp_path / "netrc", 0o600)
    assert tracking.wandb_mode("auto") == "online"
    assert tracking.wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode("auto") == "disabled"
    assert tracking.wandb_mode("online") == "online"


def test_help_lists_every_command_and_version_prints(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    for command in ("train", "predict", "evaluate", "collect", "dashboard", "sync", "export"):
        assert f"\n    {command}" in listed, command
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("behaviorlm ")


def test_sync_uploads_the_newest_offline_run_of_each_job(tmp_path, monkeypatch, capsys):
    for job, stamps in (("0", ["20261203_100000", "20261203_110000"]), ("1", ["20261203_100500"])):
        for stamp in stamps:
            (tmp_path / job / "wandb" / f"offline-run-{stamp}-abc{job}").mkdir(parents=True)
    monkeypatch.setattr(sync, "has_wandb_credentials", lambda: False)
    with pytest.raises(SystemExit, match="not logged in to W&B"):
        sync.main([str(tmp_path)])
    calls = []
    monkeypatch.setattr(sync, "has_wandb_credentials", lambda: True)
    monkeypatch.setattr(sync.subprocess, "run", lambda command: calls.append(command) or
                        subprocess.CompletedProcess(command, 0))
    sync.main([str(tmp_path)])
    assert calls[0][1:4] == ["-m", "wandb", "sync"]
    assert [Path(p).name for p in calls[0][5:]] == ["offline-run-20261203_110000-abc0",
                                                    "offline-run-20261203_100500-abc1"]
    assert f"behaviorlm dashboard {tmp_path}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no offline W&B run"):
        sync.main([str(tmp_path / "0" / "wandb" / "offline-run-20261203_100000-abc0")])


def test_a_users_dataset_is_named_after_its_file(compose, tmp_path):
    cfg = compose("data=csv", f"data.path={tmp_path}/logs/my-app log.csv.gz", "model=tiny_random")
    assert cfg.data.name == "my-app_log" and cfg.data.source == "csv"
    assert compose("data=csv", "data.path=x.csv", "data.name=shop_2024").data.name == "shop_2024"
    from behaviorlm.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="data.name"):
        validate_config(compose("data=csv", "data.path=x.csv", "data.name=a/b"))


@pytest.mark.slow
def test_outputs_go_to_the_working_directory_for_behaviorlm_train_and_the_checkout_for_run_py(tmp_path, compose):
    installed = subprocess.run([sys.executable, "-m", "behaviorlm", "train", "model=tiny_random", "data=synthetic",
                                "debug=fast", "logger=none"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    assert len(list(tmp_path.glob("outputs/debug/behaviorlm/*/metrics.json"))) == 1
    assert compose().paths.work_dir == str(ROOT)  # run.py, make and the tests: the checkout


def _tiny_sweep(folder: Path, env: dict, kill_after: str | None = None) -> subprocess.CompletedProcess:
    extra = {KILL_AT_ENV: kill_after} if kill_after else {}
    return run_entrypoint([*TINY_SWEEP, f"hydra.sweep.dir={folder}"], env={**env, **extra})


@pytest.mark.slow
def test_an_interrupted_sweep_reruns_only_its_missing_jobs_and_tabulates_from_anywhere(tmp_path):
    env = {"BEHAVIORLM_STAGE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    killed = _tiny_sweep(tmp_path / "sweep", env, kill_after="sweep:after_job_1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted(d.name for d in sweeps.job_dirs(tmp_path / "sweep")) == ["0", "1"]
    rerun = _tiny_sweep(tmp_path / "sweep", env)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((tmp_path / "sweep" / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["REUSED", "REUSED", "COMPLETED", "COMPLETED"]
    assert "[sweep] 4/4 done (2 completed, 2 reused)" in rerun.stdout
    whole = _tiny_sweep(tmp_path / "whole", env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    for num in range(4):
        resumed, reference = (json.loads((tmp_path / d / str(num) / "metrics.json").read_text())
                              for d in ("sweep", "whole"))
        resumed.pop("wandb/model_artifact", None), reference.pop("wandb/model_artifact", None)
        assert resumed == reference, num
    # the card's second step, from another directory: the table and the dashboard, the key inferred
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    tables = []
    for sweep in ("sweep", "whole"):
        collected = subprocess.run([sys.executable, "-m", "behaviorlm", "collect", str(tmp_path / sweep),
                                    "--reference", "0.05"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
        assert collected.returncode == 0, collected.stderr[-2000:]
        tables.append((tmp_path / sweep / "table.md").read_text())
    assert tables[0] == tables[1] and "| aux_ratio | seeds |" in tables[0]
    pytest.importorskip("wandb_workspaces")
    dashboard = subprocess.run([sys.executable, "-m", "behaviorlm", "dashboard", str(tmp_path / "sweep"), "--dry-run",
                                "--output", "s.json"], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert dashboard.returncode == 0, dashboard.stderr[-2000:]
    spec = json.loads((elsewhere / "s.json").read_text())
    assert spec["spec"]["swept_key"] == "aux_ratio"
    text = json.dumps(spec)
    assert all(metric in text for metric in ("test/acc_anchor", "test/acc_tail", "test/acc_overall"))
    listed = subprocess.run([sys.executable, "-m", "behaviorlm", "sync", str(tmp_path / "sweep"), "--dry-run"],
                            cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "4 offline runs would be uploaded" in listed.stdout, listed.stderr


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    from behaviorlm.pipeline import run
    from behaviorlm.utils import compose_config

    out = tmp_path_factory.mktemp("run")
    cfg = compose_config(["experiment=smoke", "stage_order=anchor_only", f"paths.output_dir={out}"])
    run(cfg)
    return out


def _prompts_logits(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.float()


@pytest.mark.parametrize("merge", [True, False])
def test_an_exported_model_loads_without_project_code_and_gives_the_runs_logits(tuned_run, tmp_path, merge):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from behaviorlm.export import main as export_main
    from behaviorlm.predict import BehaviorPredictor

    out = tmp_path / "exported"
    export_main([str(tuned_run), "--output", str(out), *(["--merge"] if merge else [])])
    predictor = BehaviorPredictor.load(tuned_run, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = [predictor.vocab.names[0], "User history: " + ", ".join(predictor.vocab.names[:4])]
    loaded = (AutoModelForCausalLM if merge else AutoPeftModelForCausalLM).from_pretrained(out).eval()
    expected = _prompts_logits(predictor.bm.model.eval(), tokenizer, texts)
    torch.testing.assert_close(_prompts_logits(loaded, tokenizer, texts), expected, rtol=1e-4, atol=1e-4)
    with predictor.bm.model.disable_adapter():  # the tuning moved the logits: the equality above says something
        assert (_prompts_logits(predictor.bm.model, tokenizer, texts) - expected).abs().max() > 1e-3
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # nothing half-written beside it
    card = (out / "README.md").read_text()
    metrics = json.loads((tuned_run / "metrics.json").read_text())
    assert f"| acc_tail | {metrics['test/acc_tail']:.3f}" in card and "anchor_only on synthetic" in card
    assert (out / ("model.safetensors" if merge else "adapter_model.safetensors")).exists()
    with pytest.raises(SystemExit, match="exists"):
        export_main([str(tuned_run), "--output", str(out)])
