"""Why does B-Tuning lower accuracy? A validation-only study of the B stage (learning rate, epochs, set
composition, early-stopping monitor), run from one shared A-tuned adapter.

    python -m experiments.b_tuning_study results/b-tuning-study                        # the study in docs/results.md
    python -m experiments.b_tuning_study /tmp/study --overrides experiment=smoke debug=fast   # seconds

One A-Tuning and one scoring of the selection pool; then every variant restarts from the A-tuned adapter, trains
its B set for `--epochs` epochs and is scored on the validation set after every epoch (never on test), so the
per-epoch curves also show which epoch each early-stopping monitor would keep. Writes, in the output folder:
  curves.csv   variant, epoch, validation acc_overall / acc_anchor / acc_tail / macro_f1, share of anchor predictions
  study.md     the table docs/results.md quotes, with the machine and the command
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.data.conversations import load_conversations
from behaviorlm.data.dataset import load_dataset
from behaviorlm.hardware import machine
from behaviorlm.metrics import compute_metrics
from behaviorlm.pipeline import build_behavior_model
from behaviorlm.selection import select_balanced
from behaviorlm.stages import a_tuning_set, selection_scores, tune
from behaviorlm.tables import markdown_table
from behaviorlm.training import trainable_state
from behaviorlm.utils import atomic_write_text, compose_config, seed_everything

# The study's base: quick_cpu's model and prompts with enough data that F = 10 is meaningful, beam scoring for
# speed (the width beam its results were made with; its top-1 agrees with exact ranking on 98.7% of NYC prompts).
BASE = ["experiment=quick_cpu", "data.max_train_samples=1500", "data.max_val_samples=300",
        "samples_per_behavior=10", "selection.max_scored_per_behavior=30", "scoring.mode=beam",
        "scoring.beam_seed=none", "logger=none"]
# name -> (B set, learning rate); every variant trains --epochs epochs from the same A-tuned adapter.
VARIANTS = {
    "difficulty lr 5e-4": ("difficulty", 5e-4),
    "difficulty lr 1e-4": ("difficulty", 1e-4),
    "random balanced lr 5e-4": ("random", 5e-4),
    "difficulty + anchor replay lr 5e-4": ("replay", 5e-4),
}


def val_metrics(bm, val, anchors) -> dict:
    rankings = bm.rankings(val, k=1)
    metrics, _ = compute_metrics([s.target for s in val], rankings, bm.vocab, k=1)
    predicted = [r[0] for r in rankings if r]
    return {"acc_overall": metrics["acc_overall"], "acc_anchor": metrics["acc_anchor"],
            "acc_tail": metrics["acc_tail"], "macro_f1": metrics["macro_f1"],
            "anchor_prediction_share": float(np.mean([p in anchors for p in predicted]))}


def b_set(kind: str, train, vocab, F: int, seed: int, pool, scores) -> list[int]:
    """Indices of the B set: difficulty-selected, random balanced, or difficulty-selected plus anchor replay (as
    many random anchor samples again as the set holds, restoring part of the training prior)."""
    if kind == "random":
        return select_balanced(train, vocab, F, seed, difficulty=False).indices
    chosen = select_balanced(train, vocab, F, seed, scores=scores, scored=pool).indices
    if kind == "replay":
        taken = set(chosen)
        rest = [i for i, s in enumerate(train) if s.target in vocab.anchors and i not in taken]
        rng = np.random.default_rng(seed)
        chosen = chosen + rng.choice(rest, size=min(len(rest), len(chosen)), replace=False).tolist()
    return chosen


def describe(facts: dict) -> str:
    return f"{facts['cpu']}, {facts['threads']} threads, torch {facts['torch']}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--overrides", nargs="*", default=None, help="config overrides replacing the study's base")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args(argv)
    overrides = args.overrides if args.overrides is not None else BASE
    cfg = compose_config(overrides)
    seed_everything(cfg.seed)
    started = time.perf_counter()
    dataset = load_dataset(cfg)
    conversations = load_conversations(cfg.aux.path, cfg.aux.format) if cfg.aux_ratio > 0 else []
    bm, _ = build_behavior_model(cfg, dataset, conversations)
    val, train, vocab = dataset.val, dataset.train, dataset.vocab

    examples, _ = a_tuning_set(bm, train, conversations, cfg.aux_ratio, cfg.aux.max_response_tokens, cfg.seed)
    # No validation slice is passed to tune: every epoch is scored here and the monitors compared afterwards.
    tune(bm, examples, cfg.train.a_tuning, cfg.train, [], cfg.seed, "a_tuning")
    a_state = {k: v.clone() for k, v in trainable_state(bm.model).items()}
    rows = [{"variant": "after A-Tuning", "epoch": 0, "n_b": 0, "b_anchor_share": None,
             **val_metrics(bm, val, vocab.anchors)}]
    pool, scores = selection_scores(bm, train, cfg.selection, cfg.seed)

    for name in args.variants:
        kind, lr = VARIANTS[name]
        indices = b_set(kind, train, vocab, cfg.samples_per_behavior, cfg.seed, pool, scores)
        samples = [train[i] for i in indices]
        examples = bm.behavior_examples(samples)
        anchor_share = float(np.mean([s.target in vocab.anchors for s in samples]))
        bm.model.load_state_dict(a_state, strict=False)
        stage = cfg.train.b_tuning.copy()
        stage.learning_rate, stage.max_epochs = lr, 1
        # Epoch by epoch, so that each epoch is scored; the learning rate restarts its (linear) schedule each
        # epoch, which is the schedule of a 1-epoch stage repeated.
        for epoch in range(1, args.epochs + 1):
            tune(bm, examples, stage, cfg.train, [], cfg.seed + epoch, f"{name} epoch {epoch}")
            rows.append({"variant": name, "epoch": epoch, "n_b": len(samples), "b_anchor_share": anchor_share,
                         **val_metrics(bm, val, vocab.anchors)})
            print(rows[-1], flush=True)
    curves = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "curves.csv", curves.to_csv(index=False))
    n_val_tail = sum(s.target not in vocab.anchors for s in val)
    header = (f"B-Tuning study on validation only ({len(val)} samples, {n_val_tail} tail; train {len(train)}, "
              f"F = {cfg.samples_per_behavior}, pool {cfg.selection.max_scored_per_behavior} per behavior, "
              f"model {cfg.model.name}, seed {cfg.seed}).\n"
              f"Command: python -m experiments.b_tuning_study {args.out}"
              f"{' --overrides ' + ' '.join(overrides) if args.overrides is not None else ''}\n"
              f"Machine: {describe(machine())}; {time.perf_counter() - started:.0f} s\n")
    atomic_write_text(args.out / "study.md", header + "\n" + markdown_table(curves.round(3)) + "\n")
    print(header + curves.round(3).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1:])
