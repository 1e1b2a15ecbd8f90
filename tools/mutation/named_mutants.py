"""The bugs issue #19 named, planted one at a time in a copy of the tree, each against the test that must catch it.

    python -m tools.mutation.named_mutants        # part of `make mutation`; writes results/named_mutants.json

mutmut (tools/mutation/mutation.py) generates its own mutants but leaves some functions alone (mutmut 3 does not
mutate a function that defines another, such as `beam_scores`); these hand-written ones are the regressions a
reviewer found surviving, so each must stay killed by a named test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from behaviorlm.utils import PROJECT_ROOT, atomic_write_json

# (file, original text, planted text, the test that must fail)
BUGS = [
    ("behaviorlm/scoring.py", "keep = torch.topk(first_logprobs[:, first_tokens], min(width, len(first)), dim=1)",
     "keep = torch.topk(first_logprobs[:, first_tokens], min(width, len(first)), dim=1, largest=False)",
     "tests/test_beam.py::test_bounded_beam_ranks_the_top_k_exactly_even_when_greedy"),
    # the seeded beam (2026-11-27): the seed not fed, the prompt's end read from a node's row, a target-leaking seed
    ("behaviorlm/scoring.py", "keep = [sorted({first_of_candidate[c] for c in seed[i]}) for i in chunk]",
     "keep = [[] for i in chunk]",
     "tests/test_beam.py::test_seeded_beam_ranks_the_top_k_exactly_whatever_the_seed"),
    ("behaviorlm/scoring.py", "first_logprobs = torch.log_softmax(step.logits[:, 0].float(), dim=-1)",
     "first_logprobs = torch.log_softmax(step.logits[:, -1].float(), dim=-1)",
     "tests/test_scoring.py::test_trie_scores_equal_direct_sums"),
    ("behaviorlm/behavior_model.py", "return [sorted({column[h] for h in s.history if h in column}) for s in samples]",
     "return [sorted({column[h] for h in (*s.history, s.target) if h in column}) for s in samples]",
     "tests/test_behavior_model.py::test_a_behavior_model_scores_with_the_mode_it_was_built_with"),
    ("behaviorlm/metrics.py", 'f"acc_at_{k}_tail": _mean(in_top_k[tail]),',
     'f"acc_at_{k}_tail": _mean(in_top_k[anchor]),',
     "tests/test_metrics.py::test_every_metric_against_a_hand_worked_example"),
    ("behaviorlm/metrics.py", '"weighted_f1_anchor": _weighted(table, is_anchor & with_support),',
     '"weighted_f1_anchor": _weighted(table, ~is_anchor & with_support),',
     "tests/test_metrics.py::test_every_metric_against_a_hand_worked_example"),
    ("behaviorlm/metrics.py", '"macro_f1": _mean(table["f1"]),',
     '"macro_f1": _mean(table.loc[table["support"] > 0, "f1"]),',
     "tests/test_metrics.py::test_every_metric_against_a_hand_worked_example"),
    ("behaviorlm/selection.py", "own = scores[row, column[target]]", "own = scores[index, column[target]]",
     "tests/test_selection.py::test_score_rows_follow_the_scored_pool_not_the_sample_index"),
    ("behaviorlm/selection.py", '("unscored", [i for i in shuffled if i not in info]),\n            ]',
     ']\n            ranked.insert(2, ("unscored", [i for i in shuffled if i not in info]))',
     "tests/test_selection.py::test_low_margin_comes_before_unscored_and_a_tie_is_not_a_misprediction"),
    ("behaviorlm/selection.py", "info[index] = (margin < 0, same, margin)", "info[index] = (margin <= 0, same, margin)",
     "tests/test_selection.py::test_low_margin_comes_before_unscored_and_a_tie_is_not_a_misprediction"),
]
SKIP = (".git", ".venv", ".cache", ".whl", ".gguf_parts", "results", "mutants", "build", "outputs", "multirun",
        "*.egg-info")


def check(path: str, old: str, new: str, test: str, tree: Path) -> dict:
    source = tree / path
    original = source.read_text()
    if original.count(old) != 1:
        raise SystemExit(f"error: {path} no longer holds the text this bug is planted in: {old!r}")
    source.write_text(original.replace(old, new))
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=tree,
                                capture_output=True, text=True, timeout=600)
    finally:
        source.write_text(original)
    return {"file": path, "planted": " / ".join(line.strip() for line in new.splitlines()), "test": test,
            "killed": result.returncode not in (0, 5)}  # 5: no test collected, which is no kill


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"  # a copy: the checkout's own files are never edited
        shutil.copytree(PROJECT_ROOT, tree, ignore=shutil.ignore_patterns(*SKIP))
        rows = [check(*bug, tree) for bug in BUGS]
    for row in rows:
        print("killed  " if row["killed"] else "SURVIVED", row["file"], "|", row["planted"][:60], "|",
              row["test"].split("::")[1])
    atomic_write_json(PROJECT_ROOT / "results" / "named_mutants.json",
                      {"command": "python -m tools.mutation.named_mutants", "bugs": rows,
                       "killed": sum(r["killed"] for r in rows), "total": len(rows)})
    if not all(r["killed"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
