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


def day_first_log(hand_log, times=None):
    """hand_log's times written day-first, as a European spreadsheet exports them (all days <= 12: ambiguous)."""
    stamps = pd.to_datetime(hand_log["timestamp"])
    return hand_log.assign(timestamp=times or list(stamps.dt.strftime("%d/%m/%Y %H:%M")))


def test_day_first_times_are_refused_unless_their_format_is_given(tmp_path, hand_log, caplog):
    path = write(tmp_path, day_first_log(hand_log))
    with pytest.raises(DataError) as err:
        read_behavior_log(path)
    assert str(err.value) == (
        f"data file '{path}': column 'timestamp' is ambiguous: line 2 '01/01/2024 08:00' reads as 2024-01-01 "
        "08:00:00 (%m/%d/%Y %H:%M) or 2024-01-01 08:00:00 (%d/%m/%Y %H:%M); set data.time_format (e.g. "
        "data.time_format='%m/%d/%Y %H:%M') or data.dayfirst=true|false") or "line 5 '02/01/2024 08:00'" in str(
        err.value)
    assert "line 5 '02/01/2024 08:00' reads as 2024-02-01 08:00:00 (%m/%d/%Y %H:%M) or 2024-01-02 08:00:00" in \
        str(err.value)
    expected = read_behavior_log(write(tmp_path, hand_log, "iso.csv"))
    with caplog.at_level(logging.INFO, logger="behaviorlm.data.logs"):
        by_format = read_behavior_log(path, time_format="%d/%m/%Y %H:%M")
    assert list(by_format["time"]) == list(expected["time"])
    assert f"data file '{path}': 9 events from 2024-01-01 07:00:00 to 2024-01-04 09:00:00" in caplog.text
    assert list(read_behavior_log(path, dayfirst=True)["time"]) == list(expected["time"])
    month_first = read_behavior_log(path, dayfirst=False)["time"]  # what the user says, read as said
    assert pd.Timestamp("2024-02-01 08:00") in set(month_first)


def test_a_day_that_only_one_order_can_read_settles_the_column(tmp_path, hand_log):
    times = list(day_first_log(hand_log)["timestamp"])
    times[-1] = "13/01/2024 09:00"  # no 13th month: the whole column is day-first
    events = read_behavior_log(write(tmp_path, day_first_log(hand_log, times)))
    assert pd.Timestamp("2024-01-13 09:00") in set(events["time"])
    assert pd.Timestamp("2024-01-02 08:00") in set(events["time"])  # 02/01 read day-first too, not as Feb 1


def test_a_column_mixing_formats_is_refused_with_the_odd_line(tmp_path, hand_log):
    times = list(hand_log["timestamp"])
    times[3] = "04/01/2024 10:00"
    path = write(tmp_path, hand_log.assign(timestamp=times))
    with pytest.raises(DataError, match=r"column 'timestamp' mixes time formats: line 2 '2024-01-01 08:00' reads as "
                                        r"ISO8601 \(as 8 of 9 values do\), line 5 '04/01/2024 10:00' does not; .*"
                                        r"data.time_format$"):
        read_behavior_log(path)
    with pytest.raises(DataError, match=r"line 2: '2024-01-01 08:00' does not match data.time_format='%d/%m/%Y"):
        read_behavior_log(path, time_format="%d/%m/%Y %H:%M")


def test_day_first_csv_run_stops_with_exit_2_naming_the_key(tmp_path, hand_log):
    path = write(tmp_path, day_first_log(hand_log))
    result = run_entrypoint(["data=csv", f"data.path={path}", "logger=none", "model=tiny_random",
                             f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: data file '{path}': column 'timestamp' is ambiguous") and \
        "data.time_format" in last


def test_a_repeated_column_name_is_an_error_not_a_silent_rename(tmp_path, hand_log):
    path = tmp_path / "dup.csv"
    path.write_text(hand_log.to_csv(index=False).replace("user_id,timestamp,behavior,category",
                                                         "user_id,timestamp,behavior,behavior"))
    with pytest.raises(DataError, match=r"the header repeats column name\(s\) \['behavior'\]"):
        read_behavior_log(path)
    result = run_entrypoint(["data=csv", f"data.path={path}", "logger=none", "model=tiny_random",
                             f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2 and "repeats column name(s) ['behavior']" in result.stderr.splitlines()[-1]


def test_nested_jsonl_fields_are_dotted_columns(tmp_path, hand_log):
    import json

    path = tmp_path / "nested.jsonl"
    path.write_text("".join(json.dumps({"user": {"id": row.user_id}, "event": {"at": row.timestamp,
                                                                               "name": row.behavior},
                                        "category": row.category}) + "\n" for row in hand_log.itertuples()))
    events = read_behavior_log(path, user="user.id", time="event.at", behavior="event.name")
    pd.testing.assert_frame_equal(events, read_behavior_log(write(tmp_path, hand_log)))


def test_equal_times_keep_file_order_and_an_all_equal_log_is_refused(tmp_path, hand_log, caplog):
    tied = hand_log.assign(timestamp=["2024-01-01 08:00"] * 3 + list(hand_log["timestamp"][3:]))
    with caplog.at_level(logging.INFO, logger="behaviorlm.data.logs"):
        events = read_behavior_log(write(tmp_path, tied))
    assert list(events[events.user == "u1"]["behavior"])[:3] == ["Home", "Gym", "Cafe"]  # the file's order
    assert "3 events share their user's timestamp with another and keep their file order" in caplog.text
    reversed_file = write(tmp_path, tied.iloc[[2, 1, 0] + list(range(3, 9))], "reversed.csv")
    assert list(read_behavior_log(reversed_file)["behavior"])[:3] == ["Cafe", "Gym", "Home"]
    same = write(tmp_path, hand_log.assign(timestamp="2024-01-01 08:00"), "same.csv")
    with pytest.raises(DataError, match=r"every event has the same time \(2024-01-01 08:00:00\) in column "
                                        r"'timestamp': the log cannot be ordered or split by time$"):
        read_behavior_log(same)


def test_every_file_a_run_writes_gets_the_umask_mode(tmp_path):
    import os
    import stat

    cache = tmp_path / "cache"
    old = os.umask(0o022)
    try:
        result = run_entrypoint(["experiment=smoke", "debug=fast", f"hydra.run.dir={tmp_path}/job"],
                                env={"BEHAVIORLM_STAGE_CACHE": str(cache)})
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr[-2000:]
    files = [p for root in (tmp_path / "job", cache) for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"metrics.json", "manifest.json", "test_predictions.csv", "per_behavior.csv", "adapter.pt",
            "ENTRY.json", "adapter_model.safetensors"} <= names, names
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, {name: mode for name, mode in modes.items() if mode != "0o644"}
    folders = {oct(stat.S_IMODE(p.stat().st_mode)) for root in (tmp_path / "job", cache) for p in root.rglob("*")
               if p.is_dir()}
    assert folders == {"0o755"}


def test_a_swept_value_out_of_range_stops_the_sweep_before_its_first_job(tmp_path):
    result = run_entrypoint(["-m", "aux_ratio=0,1.5", "model=tiny_random", "data=synthetic", "debug=fast",
                             "logger=none", f"hydra.sweep.dir={tmp_path}/sweep"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == ("error: config key 'aux_ratio' = 1.5 is out of range: expected "
                                                      "a share in [0, 1) (no job of this sweep was started)")
    assert not (tmp_path / "sweep" / "0").exists()


def test_a_typo_with_cfg_job_gets_hydras_own_message(tmp_path):
    result = run_entrypoint(["aux_ration=0.1", "--cfg", "job"], timeout=120)
    assert result.returncode == 1
    assert "Key 'aux_ration' not in 'BehaviorLMConfig'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) < 10


def test_an_unavailable_device_is_one_line_and_exit_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = run_entrypoint(["device=cuda", "model=tiny_random", "data=synthetic", "debug=fast", "logger=none",
                             f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: device=cuda but no CUDA device is visible"
    assert "Traceback" not in result.stderr
