"""Behavior logs -> samples -> splits -> anchor/tail, on hand-made logs, synthetic logs and the real NYC files."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from behaviorlm.data.conversations import load_conversations, parse_dialogue
from behaviorlm.data.dataset import load_dataset
from behaviorlm.data.logs import DataError, read_behavior_log
from behaviorlm.data.samples import (Sample, build_samples, build_vocab, cap_per_behavior, split_samples,
                                     time_cutoff)
from behaviorlm.data.summary import dataset_summary
from behaviorlm.data.synthetic import generate_synthetic_log
from conftest import ROOT


def write(tmp_path, frame, name="log.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_history_windows_are_exact_and_never_see_the_future(tmp_path, hand_log):
    events = read_behavior_log(write(tmp_path, hand_log))
    samples, skipped = build_samples(events, history_len=2, min_history=3)
    assert skipped == 1  # u2 has only 3 events
    assert [(s.history, s.target) for s in samples] == [
        (("Gym", "Cafe"), "Home"),
        (("Cafe", "Home"), "Office"),
        (("Home", "Office"), "Bar"),
    ]
    assert samples[0].history_times == ((0, 9), (0, 12))  # Monday 09:00, Monday 12:00
    for sample in samples:
        user_events = events[events["user"] == sample.user]
        earlier = user_events[user_events["time"] < sample.time]["behavior"].tolist()
        assert list(sample.history) == earlier[-2:]


def test_chronological_split_puts_every_test_target_after_every_train_target(tmp_path):
    events = generate_synthetic_log(n_users=20, events_per_user=25, seed=3)
    samples, _ = build_samples(events, 5, 3)
    splits = split_samples(samples, None, test_fraction=0.2, val_fraction=0.1)
    assert max(s.time for s in splits["train"]) <= min(s.time for s in splits["val"])
    assert max(s.time for s in splits["val"]) <= min(s.time for s in splits["test"])
    assert abs(len(splits["test"]) / len(samples) - 0.2) < 0.02
    explicit = split_samples(samples, "2024-01-05", 0.2, 0.0)
    assert all(s.time >= pd.Timestamp("2024-01-05") for s in explicit["test"])
    assert all(s.time < pd.Timestamp("2024-01-05") for s in explicit["train"])


def test_anchor_tail_split_uses_the_training_share(tmp_path):
    rows = [("u", f"2024-01-01 {h:02d}:00", b, "c") for h, b in enumerate(["A"] * 6 + ["B"] * 3 + ["C"] * 1)]
    events = read_behavior_log(write(tmp_path, pd.DataFrame(rows, columns=["user_id", "timestamp", "behavior",
                                                                            "category"])))
    samples, _ = build_samples(events, 3, 1)  # targets: A x5, B x3, C x1
    vocab = build_vocab(events, samples, anchor_threshold=0.3)
    assert vocab.anchors == {"A", "B"}  # 5/9 and 3/9 > 0.3; 1/9 is not
    assert vocab.tail == {"C"}
    assert vocab.names == ["A", "B", "C"]
    assert build_vocab(events, samples, anchor_threshold=0.4).anchors == {"A"}


def test_synthetic_logs_are_deterministic_and_long_tailed():
    a = generate_synthetic_log(seed=1)
    b = generate_synthetic_log(seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(generate_synthetic_log(seed=2))
    counts = a["behavior"].value_counts()
    assert counts.iloc[0] / counts.iloc[-1] > 10
    assert a.groupby("behavior")["category"].nunique().max() == 1


def test_foursquare_adapter_on_the_real_files(compose):
    cfg = compose("data=foursquare_nyc")
    dataset = load_dataset(cfg)
    summary = dataset_summary(dataset)
    assert summary["events"] == 20713 and summary["users"] == 620
    assert summary["behaviors"] == 192
    assert len(summary["categories"]) == 9 and "Event" not in summary["categories"]
    assert set(dataset.vocab.categories) == set(dataset.vocab.names)  # every behavior has a root category
    assert "Home (private)" in dataset.vocab.anchors and "Subway" in dataset.vocab.anchors
    assert summary["unseen_in_train_test_behaviors"] > 0
    assert dataset.vocab.categories["Ferry"] == "Travel & Transport"
    assert dataset.vocab.categories["Coffee Shop"] == "Food"
    # train = the validation period, test = the test period: no test target precedes a training target
    assert max(s.time for s in dataset.train + dataset.val) <= min(s.time for s in dataset.test)


def test_custom_csv_column_mapping(tmp_path, compose, hand_log):
    renamed = hand_log.rename(columns={"user_id": "uid", "timestamp": "when", "behavior": "action",
                                       "category": "kind"})
    path = write(tmp_path, renamed)
    cfg = compose("data=csv", f"data.path={path}", "data.columns.user=uid", "data.columns.time=when",
                  "data.columns.behavior=action", "data.columns.category=kind", "data.min_history=2",
                  "data.split.test_fraction=0.3", "data.split.val_fraction=0")
    dataset = load_dataset(cfg)
    assert dataset.vocab.categories["Gym"] == "Sport"
    assert {s.target for s in dataset.train + dataset.test} <= set(hand_log["behavior"])


def test_csv_without_category_disables_categories(tmp_path, hand_log):
    events = read_behavior_log(write(tmp_path, hand_log.drop(columns=["category"])))
    samples, _ = build_samples(events, 3, 2)
    assert not build_vocab(events, samples, 0.1).has_categories


def test_category_gaps_are_filled_from_the_same_behavior(tmp_path, hand_log):
    hand_log.loc[1, "category"] = None
    events = read_behavior_log(write(tmp_path, hand_log))
    assert events.loc[events["behavior"] == "Gym", "category"].tolist() == ["Sport", "Sport"]


def test_parquet_and_jsonl_logs_read_like_csv(tmp_path, hand_log):
    hand_log.to_parquet(tmp_path / "log.parquet")
    hand_log.to_json(tmp_path / "log.jsonl", orient="records", lines=True)
    base = read_behavior_log(write(tmp_path, hand_log))
    for name in ("log.parquet", "log.jsonl"):
        pd.testing.assert_frame_equal(read_behavior_log(tmp_path / name), base)


@pytest.mark.parametrize("mutate, fragments", [
    (lambda f: f.drop(columns=["behavior"]), ["column 'behavior'", "data.columns.behavior"]),
    (lambda f: f.rename(columns={"timestamp": "ts"}), ["column 'timestamp'"]),
    (lambda f: f.iloc[:0], ["header but no rows"]),
    (lambda f: f.assign(timestamp=["2024-01-01"] * 8 + ["yesterday-ish"]), ["column 'timestamp'", "line 10",
                                                                          "yesterday-ish"]),
    (lambda f: f.assign(behavior=["Home"] * 4 + [None] + ["Gym"] * 4), ["column 'behavior'", "line 6"]),
    (lambda f: f.assign(behavior=["Home"] * 4 + ["  "] + ["Gym"] * 4), ["column 'behavior'", "line 6"]),
])
def test_bad_logs_give_one_clear_error(tmp_path, hand_log, mutate, fragments):
    path = write(tmp_path, mutate(hand_log))
    with pytest.raises(DataError) as err:
        read_behavior_log(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_empty_and_non_utf8_files(tmp_path, hand_log):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        read_behavior_log(empty)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(hand_log.to_csv(index=False).replace("Cafe", "Caf\u00e9").encode("latin-1"))
    with pytest.raises(DataError, match=r"is not utf-8 text at line 4 \(byte 0xe9 at column 24\); set "
                                        r"data.encoding \(e.g. data.encoding=latin-1\)$"):
        read_behavior_log(latin)
    assert "Caf\u00e9" in set(read_behavior_log(latin, encoding="latin-1")["behavior"])
    with pytest.raises(DataError, match="does not exist"):
        read_behavior_log(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="unknown format"):
        read_behavior_log(write(tmp_path, hand_log, "log.xlsx"))


def test_too_short_histories_are_skipped_and_counted(tmp_path, compose, hand_log):
    cfg = compose("data=csv", f"data.path={write(tmp_path, hand_log)}", "data.min_history=3",
                  "data.split.test_fraction=0.4", "data.split.val_fraction=0")
    dataset = load_dataset(cfg)
    assert dataset.skipped_users == 1
    with pytest.raises(DataError, match="min_history=10"):
        load_dataset(compose("data=csv", f"data.path={write(tmp_path, hand_log)}", "data.min_history=10"))


def test_conversation_corpora_load_as_chat_messages(tmp_path):
    alpaca = load_conversations(ROOT / "behaviorlm/bundled/conversations/alpaca_en_demo.json.gz", "alpaca")
    assert len(alpaca) == 999 and alpaca[0][-1]["role"] == "assistant"
    dialogues = load_conversations(ROOT / "behaviorlm/bundled/conversations/hh_rlhf_harmless_base_test.jsonl.gz",
                                   "dialogue")
    assert len(dialogues) > 2000 and all(d[-1]["role"] == "assistant" for d in dialogues[:50])
    assert parse_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b"}\n{not json\n')
    with pytest.raises(DataError, match="line 2"):
        load_conversations(broken, "dialogue")
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wt") as handle:
        json.dump([{"instruction": "x"}], handle)
    with pytest.raises(DataError, match="record 0"):
        load_conversations(bad, "alpaca")
    with pytest.raises(DataError, match="does not exist"):
        load_conversations(tmp_path / "nope.json", "alpaca")


def test_k_shot_cap_keeps_at_most_k_per_behavior_in_order_and_seeded():
    samples = [Sample("u", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i), (), (), target)
               for i, target in enumerate("AABABAABC")]  # A x5, B x3, C x1 (fewer than any cap below)
    assert cap_per_behavior(samples, None, seed=0) is samples  # no cap: every sample
    kept = cap_per_behavior(samples, 3, seed=0)
    assert [s.target for s in kept].count("A") == 3 and [s.target for s in kept].count("B") == 3
    assert kept[-1] is samples[-1]  # C's one sample, kept whatever the cap
    assert kept == sorted(kept, key=lambda s: s.time)  # the original order
    assert [cap_per_behavior(samples, 2, seed) for seed in range(8)] == [
        cap_per_behavior(samples, 2, seed) for seed in range(8)]  # the same seed, the same draw
    draws = {tuple(s.time for s in cap_per_behavior(samples, 2, seed)) for seed in range(16)}
    assert len(draws) > 1 and all(len(d) == 5 for d in draws)  # seeds draw different samples, 2 of A and B, C
    assert all(len(set(d)) == len(d) for d in draws)  # drawn without replacement: no sample twice


def test_samples_carry_the_sources_period_and_a_history_from_the_users_first_event():
    """A source that fixes the split (a `period` column) hands each sample its target's period; a history window
    longer than the events before a target starts at the user's first event; every short user is counted."""
    hours = [pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h) for h in range(4)]
    events = pd.DataFrame({"user": ["u"] * 4 + ["v", "w"], "time": hours + hours[:2],
                           "behavior": ["A", "B", "C", "D", "E", "F"],
                           "period": ["train", "train", "train", "test", "train", "train"]})
    samples, skipped = build_samples(events, history_len=5, min_history=1)
    assert skipped == 2  # v and w have one event each
    assert [(s.history, s.target, s.period) for s in samples] == [
        (("A",), "B", "train"), (("A", "B"), "C", "train"), (("A", "B", "C"), "D", "test")]
    without_period, _ = build_samples(events.drop(columns="period"), history_len=5, min_history=1)
    assert {s.period for s in without_period} == {None}


def test_chronological_split_at_its_boundaries():
    """Eight samples an hour apart (hours 0-7), no fixed periods: a quarter to test, a third of the rest to val."""
    hours = [pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h) for h in range(8)]
    assert time_cutoff(hours, 0.0) == hours[-1] and time_cutoff(hours, 1.0) == hours[0]  # clipped to the ends
    assert time_cutoff(hours, 0.25) == hours[6]
    samples = [Sample("u", t, (), (), "A") for t in hours]
    split = split_samples(samples, None, 0.25, 1 / 3)
    # test from the cutoff on (hour 6 included); val from round(6 * 2/3) = 4 on; train before it
    assert [[s.time.hour for s in split[k]] for k in ("train", "val", "test")] == [[0, 1, 2, 3], [4, 5], [6, 7]]
    assert [s.time.hour for s in split_samples(samples, None, 0.25, 0.0)["train"]] == list(range(6))  # no val
    at = split_samples(samples, "2024-01-01 05:00", 0.25, 0.0)  # a fixed test start wins over the fraction
    assert [s.time.hour for s in at["test"]] == [5, 6, 7]
    assert split_samples([], None, 0.25, 0.2) == {"train": [], "val": [], "test": []}
    one = split_samples(samples[:1], None, 0.25, 0.0)  # one sample: at the cutoff, so a test sample
    assert (len(one["train"]), len(one["test"])) == (0, 1)


def test_vocabulary_orders_by_training_count_and_marks_anchors_by_share():
    events = pd.DataFrame({"behavior": ["Gym", "Cafe", "Bar", "Aquarium", "Cafe"],
                           "category": ["Sport", "Food", "Food", "Park", "Drinks"]})
    train = [Sample("u", pd.Timestamp("2024-01-01"), (), (), t) for t in ["Cafe", "Cafe", "Gym", "Bar", "Cafe"]]
    vocab = build_vocab(events, train, anchor_threshold=0.3)
    assert vocab.names == ["Cafe", "Bar", "Gym", "Aquarium"]  # most targets first, ties by name; Aquarium: none
    assert vocab.train_counts == {"Cafe": 3, "Bar": 1, "Gym": 1, "Aquarium": 0}
    assert vocab.anchors == {"Cafe"}  # 3/5 > 0.3; Bar and Gym 1/5 each; Aquarium 0
    # a behavior's first category in the log wins (Cafe is logged as Food, later as Drinks)
    assert vocab.categories == {"Gym": "Sport", "Cafe": "Food", "Bar": "Food", "Aquarium": "Park"}
    assert build_vocab(events, train, anchor_threshold=0.19).anchors == {"Cafe", "Bar", "Gym"}  # never Aquarium
    single = build_vocab(events, train[:1], anchor_threshold=0.6)  # one training sample: a share of 1
    assert single.anchors == {"Cafe"}
    uncategorised = build_vocab(events.assign(category=None), train, anchor_threshold=0.3)
    assert uncategorised.categories == {}


@pytest.mark.parametrize("rows", [None, [0, 5, 17], list(range(0, 60, 2))])
def test_sample_index_builds_the_samples_of_a_plain_per_user_walk(rows):
    from behaviorlm.data.samples import SampleIndex

    rng = np.random.default_rng(1)
    events = pd.DataFrame({"user": rng.choice(["a", "b", "c", "d"], 90),
                           "time": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 40, 90), unit="h"),
                           "behavior": rng.choice(["Home", "Gym", "Cafe", "Bar"], 90), "category": None})
    expected = []
    for user, group in events.sort_values(["user", "time"], kind="stable").groupby("user"):
        names, times = list(group["behavior"]), list(group["time"])
        for i in range(2, len(group)):  # min_history 2, history_len 3
            expected.append(Sample(user, times[i], tuple(names[max(0, i - 3):i]),
                                   tuple((t.weekday(), t.hour) for t in times[max(0, i - 3):i]), names[i]))
    index = SampleIndex(events, history_len=3, min_history=2)
    assert index.samples(None if rows is None else np.array(rows)) == (
        expected if rows is None else [expected[i] for i in rows])
    assert list(index.target_names) == [s.target for s in expected]
