"""The `behaviorlm` console script: train from any directory, use a tuned run on new logs, tabulate a sweep.

    behaviorlm train [HYDRA OVERRIDES]                                 # the pipeline of run.py (behaviorlm.train)
    behaviorlm predict RUN_DIR --input events.csv [--k 5] [--output preds.csv] [--every-event]
    behaviorlm predict wandb:ENTITY/PROJECT/NAME:ALIAS --input events.csv   # a job's logged model artifact
    behaviorlm evaluate RUN_DIR --input events.csv [--output metrics.json]
    behaviorlm collect SWEEP_DIR [--reference VALUE]                  # tables and paired tests (behaviorlm.collect)
    behaviorlm dashboard SWEEP_DIR [--dry-run --output spec.json]    # a W&B workspace + report (behaviorlm.dashboard)
    behaviorlm sync SWEEP_DIR                                         # upload offline W&B runs (behaviorlm.sync)
    behaviorlm export RUN_DIR --output DIR [--merge]                  # a Hugging Face model dir (behaviorlm.export)

predict and evaluate read logs in the same schema as `data=csv` (columns user_id, timestamp, behavior, category by
default; --user-col/--time-col/--behavior-col/--category-col map other names; --time-format, --dayfirst,
--time-unit and --encoding read times and text as data.time_format, data.dayfirst, data.time_unit and
data.encoding do).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from behaviorlm.data.logs import DataError, read_behavior_log
from behaviorlm.data.samples import Sample, build_samples
from behaviorlm.utils import atomic_write, atomic_write_json, atomic_write_text

log = logging.getLogger("behaviorlm")


# Commands with a parser of their own (module.main(argv)): `behaviorlm train --help` is Hydra's, the others argparse's.
DELEGATED = {
    "train": ("behaviorlm.train", "run the pipeline: A-Tuning, selection, B-Tuning, test (Hydra overrides; -m sweeps)"),
    "collect": ("behaviorlm.collect", "tables, intervals and paired tests of a sweep folder"),
    "dashboard": ("behaviorlm.dashboard", "a W&B workspace and report for a sweep folder"),
    "sync": ("behaviorlm.sync", "upload a sweep's offline W&B runs, then build its dashboard"),
    "export": ("behaviorlm.export", "a tuned run as a Hugging Face model directory (LoRA merged or not)"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"behaviorlm {version('behaviorlm')}"
    except PackageNotFoundError:
        return "behaviorlm (not installed: running from a checkout)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="behaviorlm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("train",):
        sub.add_parser(name, help=DELEGATED[name][1], add_help=False)
    for name, help_text in (("predict", "top-k next behaviors with probabilities for new logs"),
                            ("evaluate", "standard metrics of a tuned run on a new log")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("run_dir", help="a run's output folder (it holds manifest.json and adapter/), or its W&B "
                                          "model artifact: wandb:ENTITY/PROJECT/NAME:ALIAS")
        cmd.add_argument("--input", required=True, type=Path, help="behavior log: csv, tsv, jsonl or parquet")
        cmd.add_argument("--output", type=Path, help="where to write the predictions (.csv, .json, .jsonl or "
                                                     ".parquet, by suffix) or the metrics (json)")
        cmd.add_argument("--user-col", default="user_id")
        cmd.add_argument("--time-col", default="timestamp")
        cmd.add_argument("--behavior-col", default="behavior")
        cmd.add_argument("--category-col", default="category")
        cmd.add_argument("--time-format", default=None,
                         help="strftime format of the time column (as data.time_format), e.g. '%%d/%%m/%%Y %%H:%%M'")
        cmd.add_argument("--dayfirst", choices=("true", "false"), default=None,
                         help="04/01/2024 is 4 January (true) or April 1 (false); unset: refuse when it matters")
        cmd.add_argument("--time-unit", choices=("s", "ms"), default=None, help="Unix epoch seconds / milliseconds")
        cmd.add_argument("--encoding", default="utf-8", help="the log's text encoding (as data.encoding)")
        cmd.add_argument("--device", default="auto")
        cmd.add_argument("--batch-size", type=int, default=4)
        cmd.add_argument("--k", type=int, default=5, help="how many ranked behaviors per row")
        cmd.add_argument("--scoring-mode", choices=("exact", "beam"), default="exact",
                         help="exact ranks every name; beam scores the names in each user's history in the prompt's "
                              "forward and whatever else could still be the best, so the top one is still exact")
        cmd.add_argument("--beam-seed", choices=("history", "none"), default="history",
                         help="none: the beam keeps the --beam-width likeliest first tokens instead (two forwards)")
        cmd.add_argument("--beam-width", type=int, default=10)
        if name == "predict":
            cmd.add_argument("--every-event", action="store_true",
                             help="predict after every event, not only after each user's last one")
            cmd.add_argument("--at", default=None,
                             help="when the predicted next events happen (default: the time of the next logged "
                                  "event with --every-event, else each user's last event time)")
        else:
            cmd.add_argument("--min-history", type=int, default=None,
                             help="earlier events a target needs (default: the run's own data.min_history, so that "
                                  "the numbers compare with its test)")
    for name in ("collect", "dashboard", "sync", "export"):
        sub.add_parser(name, help=DELEGATED[name][1], add_help=False)
    return parser


def prediction_points(events: pd.DataFrame, history_len: int, every_event: bool,
                      at: str | None = None) -> list[tuple[str, Sample | str]]:
    """(user, sample or per-row error) for each place a prediction is asked for; a sample's time is when the
    predicted event happens: the next logged event's time where there is one, else `at` or the last event's."""
    points: list[tuple[str, Sample | str]] = []
    for user, group in events.groupby("user", sort=True):
        names, times = group["behavior"].tolist(), group["time"].tolist()
        ends = range(0, len(group) + 1) if every_event else [len(group)]
        for end in ends:
            if end == 0:
                points.append((str(user), "no earlier event of this user: nothing to predict from"))
                continue
            lo = max(0, end - history_len)
            when = times[end] if end < len(times) else (pd.Timestamp(at) if at else times[end - 1])
            points.append((str(user), Sample(user=str(user), time=when, history=tuple(names[lo:end]),
                                             history_times=tuple((t.weekday(), t.hour) for t in times[lo:end]),
                                             target="")))
    return points


def cmd_predict(args, predictor, events: pd.DataFrame) -> None:
    points = prediction_points(events, predictor.history_len, args.every_event, args.at)
    samples = [p for _, p in points if isinstance(p, Sample)]
    ranked = iter(predictor.predict_samples(samples, args.k, progress="predict"))
    rows = []
    for user, point in points:
        if isinstance(point, str):
            rows.append({"user": user, "at_time": None, "rank": None, "behavior": None, "probability": None,
                         "error": point})
            continue
        for rank, (behavior, probability) in enumerate(next(ranked), start=1):
            rows.append({"user": user, "at_time": point.time, "rank": rank, "behavior": behavior,
                         "probability": round(probability, 6), "error": None})
    frame = pd.DataFrame(rows, columns=["user", "at_time", "rank", "behavior", "probability", "error"])
    if args.output:
        write_frame(args.output, frame)
        print(f"wrote {len(frame)} rows for {len(samples)} predictions to {args.output}")
    else:
        print(frame.to_string(index=False))


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    """By suffix: .csv (default), .json (a list of records), .jsonl (one record a line) or .parquet; atomically."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    elif suffix in (".json", ".jsonl"):
        atomic_write_text(path, frame.to_json(orient="records", lines=suffix == ".jsonl", date_format="iso"))
    else:
        atomic_write_text(path, frame.to_csv(index=False))


def cmd_evaluate(args, predictor, events: pd.DataFrame) -> None:
    from behaviorlm.metrics import compute_metrics, format_results_table

    min_history = args.min_history if args.min_history is not None else predictor.min_history
    samples, skipped = build_samples(events, predictor.history_len, min_history)
    if not samples:
        raise DataError(f"data file '{args.input}': no event has --min-history={min_history} earlier events")
    rankings = [[name for name, _ in row] for row in predictor.predict_samples(samples, args.k, "evaluate")]
    metrics, _ = compute_metrics([s.target for s in samples], rankings, predictor.vocab, args.k)
    # named as the run's own test metrics (metrics.json), so the two files compare key by key
    metrics = {f"test/{k}": v for k, v in metrics.items()}
    metrics.update({"users_skipped_short_history": skipped, "min_history": min_history})
    print(format_results_table(metrics))
    if args.output:
        atomic_write_json(args.output, metrics)
        print(f"wrote {args.output}")


def main(argv: list[str] | None = None) -> None:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DELEGATED:
        return importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from behaviorlm.predict import BehaviorPredictor

    try:
        events = read_behavior_log(args.input, args.user_col, args.time_col, args.behavior_col, args.category_col,
                                   time_unit=args.time_unit, time_format=args.time_format,
                                   dayfirst=None if args.dayfirst is None else args.dayfirst == "true",
                                   encoding=args.encoding)
        predictor = BehaviorPredictor.load(args.run_dir, device=args.device, batch_size=args.batch_size)
        predictor.use_scoring(args.scoring_mode, args.beam_width, seed=args.beam_seed)
        unknown = events.loc[~events["behavior"].isin(predictor.vocab.train_counts), "behavior"]
        if len(unknown):
            log.warning("%d events (%d distinct behaviors, e.g. %r) are unknown to this run: they stay in histories "
                        "as text but cannot be predicted", len(unknown), unknown.nunique(), unknown.iloc[0])
        (cmd_predict if args.command == "predict" else cmd_evaluate)(args, predictor, events)
    except (DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
