"""Bad or unusual logs a new user brings through `data=csv`: each is read correctly or stops with one clear line."""

import logging

import pandas as pd
import pytest

from behaviorlm.config import ConfigError
from behaviorlm.data.logs import DataError, read_behavior_log
from behaviorlm.data.samples import Sample, build_vocab
from behaviorlm.stages import check_anchors
from conftest import run_entrypoint


def write(tmp_path, frame, name="log.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_mixed_offset_and_naive_times_keep_their_written_wall_clock(tmp_path, hand_log):
    times = list(hand_log["timestamp"])
    times[1] = "2024-01-01T09:00:00+02:00"   # with an offset
    times[2] = "2024-01-01T12:00:00Z"        # UTC marker
    times[4] = "2024-01-02T10:00:00-05:00"   # another offset
    events = read_behavior_log(write(tmp_path, hand_log.assign(timestamp=times)))
    u1 = events[events.user == "u1"].set_index("behavior")["time"]
    assert u1["Gym"] == pd.Timestamp("2024-01-01 09:00") and u1["Cafe"] == pd.Timestamp("2024-01-01 12:00")
    assert u1["Office"] == pd.Timestamp("2024-01-02 10:00")
    assert events["time"].dt.tz is None


def test_an_unparseable_value_among_mixed_offsets_names_its_line(tmp_path, hand_log):
    times = list(hand_log["timestamp"])
    times[1], times[5] = "2024-01-01T09:00:00+02:00", "not a time"
    with pytest.raises(DataError, match=r"column 'timestamp' line 7: cannot parse 'not a time'"):
        read_behavior_log(write(tmp_path, hand_log.assign(timestamp=times)))


def test_a_directory_as_data_path_is_one_line_and_exit_status_2(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        read_behavior_log(tmp_path)
    result = run_entrypoint(["data=csv", f"data.path={tmp_path}", "logger=none", "model=tiny_random",
                             f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"error: data file '{tmp_path}' is a directory: data.path must name one log file (.csv, "
                         ".tsv, .jsonl or .parquet, optionally .gz)")


def test_exact_duplicates_are_dropped_and_counted_by_default(tmp_path, hand_log, caplog):
    doubled = pd.concat([hand_log, hand_log.iloc[[2, 4]]])  # two double check-ins
    path = write(tmp_path, doubled)
    with caplog.at_level(logging.WARNING, logger="behaviorlm.data.logs"):
        events = read_behavior_log(path)
    assert len(events) == len(hand_log)
    assert "dropped 2 exact duplicate events" in caplog.text
    assert len(read_behavior_log(path, duplicates="keep")) == len(hand_log) + 2
    with pytest.raises(DataError, match=r"line 11 duplicates an earlier event .* data.duplicates=error"):
        read_behavior_log(path, duplicates="error")


def test_a_duplicate_policy_outside_the_three_is_a_config_error(compose):
    from behaviorlm.config import validate_config

    with pytest.raises(ConfigError, match="data.duplicates' = 'ignore'"):
        validate_config(compose("data.duplicates=ignore"))
    with pytest.raises(ConfigError, match="data.time_unit' = 'us'"):
        validate_config(compose("data.time_unit=us"))


@pytest.mark.parametrize("unit, scale", [("s", 1), ("ms", 1000)])
def test_unix_epoch_times_parse_with_time_unit(tmp_path, hand_log, unit, scale):
    seconds = (pd.to_datetime(hand_log["timestamp"]) - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    path = write(tmp_path, hand_log.assign(timestamp=(seconds * scale).astype(str)))
    events = read_behavior_log(path, time_unit=unit)
    expected = read_behavior_log(write(tmp_path, hand_log, "plain.csv"))
    assert list(events["time"]) == list(expected["time"])


def test_epoch_numbers_without_time_unit_say_how_to_read_them(tmp_path, hand_log):
    path = write(tmp_path, hand_log.assign(timestamp=["1577836800"] * len(hand_log)))
    with pytest.raises(DataError, match=r"line 2: cannot parse '1577836800' as a time \(Unix epoch numbers: set "
                                        r"data.time_unit=s or data.time_unit=ms\)"):
        read_behavior_log(path)
    with pytest.raises(DataError, match=r"line 3: '12:00' is not a number of s since 1970"):
        read_behavior_log(write(tmp_path, hand_log.assign(timestamp=["1577836800", "12:00"] + ["1"] * 7)),
                          time_unit="s")


def anchorless_vocab(threshold):
    events = pd.DataFrame({"behavior": ["Home", "Gym", "Cafe"], "category": [None] * 3})
    train = [Sample("u", pd.Timestamp("2024-01-01"), ("Home",), ((0, 8),), target)
             for target in ["Home"] * 6 + ["Gym"] * 3 + ["Cafe"]]
    return build_vocab(events, train, threshold)


def test_a_threshold_that_leaves_no_anchor_stops_every_order_that_a_tunes():
    vocab = anchorless_vocab(0.9)
    assert not vocab.anchors
    for order in ("progressive", "anchor_only", "balanced_first", "tail_first"):
        with pytest.raises(ConfigError, match=r"'anchor_threshold' = 0.9 leaves no anchor behavior \(the largest "
                                              r"share of training targets is 0.6000, 'Home'\).*below 0.6000"):
            check_anchors(order, vocab)
    for order in ("joint", "zero_shot", "balanced_only", "tail_only"):
        check_anchors(order, vocab)  # they do not need anchors
    check_anchors("progressive", anchorless_vocab(0.5))  # Home is an anchor at 0.5


def test_the_no_anchor_error_names_the_most_frequent_behavior_and_its_true_share():
    # the most frequent target sorts first by name here, so a max() over the names alone would pick another
    events = pd.DataFrame({"behavior": ["Cafe", "Gym", "Zoo"], "category": [None] * 3})
    train = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), target)
             for target in ["Cafe"] * 5 + ["Zoo"] * 4 + ["Gym"]]
    with pytest.raises(ConfigError, match=r"share of training targets is 0.5000, 'Cafe'\)"):
        check_anchors("progressive", build_vocab(events, train, 0.6))
    # one training sample: its behavior holds the whole share (1.0), not half of it
    single = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), "Zoo")]
    with pytest.raises(ConfigError, match=r"share of training targets is 1.0000, 'Zoo'\)"):
        check_anchors("progressive", build_vocab(events, single, 1.0))


def test_no_anchor_run_exits_2_with_one_line(tmp_path):
    result = run_entrypoint(["data=synthetic", "model=tiny_random", "logger=none", "anchor_threshold=0.9",
                             f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key 'anchor_threshold' = 0.9 leaves no "
                                                             "anchor behavior")
