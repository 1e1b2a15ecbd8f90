"""Dataset summary: what a run will train and test on.

    python -m behaviorlm.data.summary                       # NYC, printed, saved as ./data_summary_foursquare_nyc.json
    python -m behaviorlm.data.summary data=synthetic anchor_threshold=0.05 +summary_out=synthetic.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from behaviorlm.data.dataset import BehaviorDataset
from behaviorlm.utils import atomic_write_text


def dataset_summary(dataset: BehaviorDataset) -> dict:
    vocab = dataset.vocab
    events = dataset.events
    test_targets = {s.target for s in dataset.test}
    unseen_in_test = sorted(test_targets & vocab.unseen)
    counts = events["behavior"].value_counts()
    positive_train = [c for c in vocab.train_counts.values() if c > 0]
    return {
        "dataset": dataset.name,
        "events": int(len(events)),
        "users": int(events["user"].nunique()),
        "time_span": [str(events["time"].min()), str(events["time"].max())],
        "samples_full": dataset.full_sizes,
        "samples_used": {k: len(v) for k, v in dataset.splits.items()},
        "users_skipped_short_history": dataset.skipped_users,
        "behaviors": len(vocab.names),
        "anchor_threshold": vocab.anchor_threshold,
        "anchors": len(vocab.anchors),
        "tail": len(vocab.tail),
        "anchor_share_of_train_targets": round(sum(vocab.train_counts[a] for a in vocab.anchors)
                                               / max(1, sum(vocab.train_counts.values())), 4),
        "head_tail_ratio_events": f"{int(counts.max())}:{int(counts.min())}",
        "head_tail_ratio_train_targets": f"{max(positive_train)}:{min(positive_train)}" if positive_train else "n/a",
        "categories": sorted(set(vocab.categories.values())) if vocab.has_categories else [],
        "unseen_in_train_test_behaviors": len(unseen_in_test),
        "unseen_in_train_test_events": sum(1 for s in dataset.test if s.target in vocab.unseen),
        "unseen_examples": unseen_in_test[:10],
        "anchor_names": [n for n in vocab.names if n in vocab.anchors],
    }


def format_summary(summary: dict) -> str:
    rows = [(key, value if not isinstance(value, (list, dict)) else json.dumps(value, default=str))
            for key, value in summary.items() if key not in ("anchor_names", "unseen_examples")]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append(f"{'anchor behaviors'.ljust(width)}  {', '.join(summary['anchor_names'])}")
    lines.append(f"{'unseen (examples)'.ljust(width)}  {', '.join(summary['unseen_examples'])}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from behaviorlm.data.dataset import load_dataset
    from behaviorlm.utils import compose_config

    overrides = [a for a in argv if not a.startswith("+summary_out=")]
    out = next((a.split("=", 1)[1] for a in argv if a.startswith("+summary_out=")), None)
    cfg = compose_config(overrides)
    summary = dataset_summary(load_dataset(cfg))
    print(format_summary(summary))
    # in the working directory: only `make data-summary` (a reproduction target) writes into the checkout's results/
    path = Path(out or Path.cwd() / f"data_summary_{cfg.data.name}.json")
    atomic_write_text(path, json.dumps(summary, indent=2, default=str))
    print(f"saved {path}")


if __name__ == "__main__":
    from behaviorlm.utils import exit_on_user_error

    with exit_on_user_error():
        main(sys.argv[1:])
