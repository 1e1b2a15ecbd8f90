"""Reuse a tuned run: save -> load -> predict round-trips, the API agrees with the evaluator, the CLI's output."""

import json

import pandas as pd
import pytest

from behaviorlm.cli import main as cli_main
from behaviorlm.data.dataset import load_dataset
from behaviorlm.metrics import compute_metrics
from behaviorlm.pipeline import run
from behaviorlm.predict import BehaviorPredictor


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    from behaviorlm.utils import compose_config

    out = tmp_path_factory.mktemp("run")
    cfg = compose_config(["experiment=smoke", "stage_order=anchor_only", "train.a_tuning.max_epochs=2",
                          f"paths.output_dir={out}"])
    metrics = run(cfg)
    return cfg, out, metrics


def test_loaded_run_reproduces_the_evaluators_test_metrics(tuned_run):
    cfg, out, metrics = tuned_run
    predictor = BehaviorPredictor.load(out, device="cpu")
    # it ranks as the run's own test did: the output-layer precision comes from the run's manifest
    assert predictor.bm.fp32_logits is cfg.scoring.fp32_logits is True
    test = load_dataset(cfg).test
    ranked = predictor.predict_samples(test, k=5)
    reproduced, _ = compute_metrics([s.target for s in test], [[b for b, _ in row] for row in ranked],
                                    predictor.vocab, k=5)
    assert reproduced["acc_overall"] == pytest.approx(metrics["test/acc_overall"])
    assert reproduced["acc_at_5"] == pytest.approx(metrics["test/acc_at_5"])
    for row in ranked[:20]:
        probabilities = [p for _, p in row]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6


def test_predict_api_on_raw_histories_keeps_unknown_behaviors_as_text(tuned_run):
    _, out, _ = tuned_run
    predictor = BehaviorPredictor.load(out, device="cpu")
    known = predictor.vocab.names[:2]
    histories = [[(known[0], "2024-02-01 08:00"), (known[1], "2024-02-01 09:30")],
                 [("Space Elevator", "2024-02-01 08:00"), (known[0], "2024-02-01 10:00")]]
    predictions = predictor.predict(histories, k=3)
    assert len(predictions) == 2 and all(len(row) == 3 for row in predictions)
    assert all(b in predictor.vocab.names for row in predictions for b, _ in row)
    full = predictor.predict(histories, k=len(predictor.vocab.names))
    assert sum(p for _, p in full[0]) == pytest.approx(1.0, abs=1e-5)


def test_cli_predict_and_evaluate(tuned_run, tmp_path, capsys):
    cfg, out, _ = tuned_run
    events = load_dataset(cfg).events
    log = events[events["user"].isin(sorted(events["user"].unique())[:3])].rename(
        columns={"user": "uid", "time": "ts", "behavior": "action"}).drop(columns=["category"])
    log.loc[log.index[0], "action"] = "Space Elevator"
    path = tmp_path / "events.csv"
    log.to_csv(path, index=False)
    preds = tmp_path / "preds.csv"
    cli_main(["predict", str(out), "--input", str(path), "--k", "4", "--output", str(preds), "--user-col", "uid",
              "--time-col", "ts", "--behavior-col", "action", "--device", "cpu"])
    frame = pd.read_csv(preds)
    assert list(frame.columns) == ["user", "at_time", "rank", "behavior", "probability", "error"]
    assert len(frame) == 3 * 4 and frame["error"].isna().all()
    assert frame.groupby("user")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4]).all()

    cli_main(["predict", str(out), "--input", str(path), "--k", "2", "--output", str(preds), "--every-event",
              "--user-col", "uid", "--time-col", "ts", "--behavior-col", "action", "--device", "cpu"])
    frame = pd.read_csv(preds)
    assert frame["error"].notna().sum() == 3  # each user's first event has nothing before it
    assert len(frame) == 3 + 2 * len(log)

    metrics_path = tmp_path / "m.json"
    cli_main(["evaluate", str(out), "--input", str(path), "--output", str(metrics_path), "--user-col", "uid",
              "--time-col", "ts", "--behavior-col", "action", "--device", "cpu", "--min-history", "3"])
    metrics = json.loads(metrics_path.read_text())
    assert 0 <= metrics["test/acc_overall"] <= 1 and metrics["test/n_samples"] == len(log) - 3 * 3

    # by default, evaluate asks what the run's own test asked (data.min_history of the run, 3 in the smoke run)
    cli_main(["evaluate", str(out), "--input", str(path), "--output", str(metrics_path), "--user-col", "uid",
              "--time-col", "ts", "--behavior-col", "action", "--device", "cpu"])
    assert json.loads(metrics_path.read_text())["min_history"] == cfg.data.min_history

    # other output formats, and the beam: same predictions as exact at the top (its top 1 is exact)
    for suffix in (".json", ".jsonl", ".parquet"):
        target = tmp_path / f"preds{suffix}"
        cli_main(["predict", str(out), "--input", str(path), "--k", "2", "--output", str(target), "--user-col",
                  "uid", "--time-col", "ts", "--behavior-col", "action", "--device", "cpu"])
        read = {".json": pd.read_json, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
        assert len(read[suffix](target)) == 3 * 2
    exact = tmp_path / "exact.csv"
    cli_main(["predict", str(out), "--input", str(path), "--k", "1", "--output", str(exact), "--user-col", "uid",
              "--time-col", "ts", "--behavior-col", "action", "--device", "cpu"])
    for seed in (["--beam-seed", "history"], ["--beam-seed", "none", "--beam-width", "1"]):
        beam = tmp_path / "beam.csv"
        cli_main(["predict", str(out), "--input", str(path), "--k", "1", "--output", str(beam), "--user-col", "uid",
                  "--time-col", "ts", "--behavior-col", "action", "--device", "cpu", "--scoring-mode", "beam", *seed])
        assert pd.read_csv(beam)["behavior"].tolist() == pd.read_csv(exact)["behavior"].tolist()

    # the same log exported day-first: refused without its format, the same predictions with it
    day_first = tmp_path / "day_first.csv"
    log.assign(ts=pd.to_datetime(log["ts"]).dt.strftime("%d/%m/%Y %H:%M:%S")).to_csv(day_first, index=False)
    given = tmp_path / "given.csv"
    cli_main(["predict", str(out), "--input", str(day_first), "--k", "1", "--output", str(given), "--user-col", "uid",
              "--time-col", "ts", "--behavior-col", "action", "--device", "cpu", "--time-format", "%d/%m/%Y %H:%M:%S"])
    assert pd.read_csv(given)["behavior"].tolist() == pd.read_csv(exact)["behavior"].tolist()


def test_cli_bad_input_is_one_line(tuned_run, tmp_path, capsys):
    _, out, _ = tuned_run
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,timestamp\nu1,2024-01-01\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", str(out), "--input", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: data file") and "behavior" in err[-1]


def test_cli_predicts_from_a_wandb_model_artifact_as_from_its_run_folder(tuned_run, tmp_path, monkeypatch):
    """`wandb:ENTITY/PROJECT/NAME:ALIAS` downloads the job's model artifact (here a fake W&B API that lays the
    artifact out as `Tracker.artifact` logs it) and predicts exactly what the run folder predicts."""
    import shutil

    import wandb

    cfg, out, _ = tuned_run
    requested = []

    class FakeArtifact:
        def download(self, root):
            for part in ("adapter", "base_model"):
                shutil.copytree(out / part, f"{root}/{part}")
            for part in ("manifest.json", "per_behavior.csv"):
                shutil.copy(out / part, root)
            return root

    class FakeApi:
        def artifact(self, name, type=None):
            requested.append((name, type))
            return FakeArtifact()

    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.setenv("BEHAVIORLM_CACHE", str(tmp_path / "cache"))
    events = load_dataset(cfg).events
    path = tmp_path / "events.csv"
    events[events["user"].isin(sorted(events["user"].unique())[:3])].rename(
        columns={"user": "user_id", "time": "timestamp"}).to_csv(path, index=False)
    outputs = {}
    for name, source in (("folder", str(out)), ("artifact", "wandb:me/behaviorlm-synthetic/model-ab12:anchor_only")):
        outputs[name] = tmp_path / f"{name}.csv"
        cli_main(["predict", source, "--input", str(path), "--k", "3", "--output", str(outputs[name]),
                  "--device", "cpu"])
    assert requested == [("me/behaviorlm-synthetic/model-ab12:anchor_only", "model")]
    assert (tmp_path / "cache" / "artifacts").is_dir()  # downloaded under BEHAVIORLM_CACHE
    pd.testing.assert_frame_equal(pd.read_csv(outputs["folder"]), pd.read_csv(outputs["artifact"]))


@pytest.mark.parametrize("reference, message", [
    ("wandb:not-a-reference", "expected wandb:ENTITY/PROJECT/NAME:ALIAS"),
    ("wandb:me/project/model-x:best", "wandb login"),  # no credentials here: one line saying how to log in
])
def test_cli_unreachable_artifact_is_one_line(tuned_run, tmp_path, capsys, monkeypatch, reference, message):
    monkeypatch.setenv("WANDB_API_KEY", "")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens: never the network
    cfg, _, _ = tuned_run
    path = tmp_path / "events.csv"
    load_dataset(cfg).events.head(20).rename(columns={"user": "user_id", "time": "timestamp"}).to_csv(path,
                                                                                                     index=False)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", reference, "--input", str(path), "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_cli_rows_equal_the_api_and_at_sets_the_predicted_time(tuned_run, tmp_path, caplog):
    cfg, out, _ = tuned_run
    predictor = BehaviorPredictor.load(out, device="cpu")
    names = predictor.vocab.names
    rows = [("u1", "2024-02-01 08:00", names[0]), ("u1", "2024-02-01 09:30", names[1]),
            ("u1", "2024-02-01 11:00", "Space Elevator"), ("u2", "2024-02-02 07:15", names[2])]
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["user_id", "timestamp", "behavior"]).to_csv(path, index=False)
    preds = tmp_path / "preds.csv"
    with caplog.at_level("WARNING"):
        cli_main(["predict", str(out), "--input", str(path), "--k", "3", "--output", str(preds), "--device", "cpu",
                  "--at", "2024-02-03 18:45"])
    assert "1 events (1 distinct behaviors, e.g. 'Space Elevator') are unknown" in caplog.text
    frame = pd.read_csv(preds)
    assert set(frame["at_time"]) == {"2024-02-03 18:45:00"}  # --at: when the predicted events happen
    # the same histories and time through the API give the same behaviors and probabilities
    api = predictor.predict([[(b, t) for _, t, b in rows[:3]], [(rows[3][2], rows[3][1])]], k=3,
                            at=["2024-02-03 18:45", "2024-02-03 18:45"])
    for user, ranked in zip(("u1", "u2"), api):
        mine = frame[frame["user"] == user].sort_values("rank")
        assert mine["behavior"].tolist() == [b for b, _ in ranked]
        assert mine["probability"].tolist() == pytest.approx([round(p, 6) for _, p in ranked], abs=1e-6)
