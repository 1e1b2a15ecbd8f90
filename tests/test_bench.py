"""`make bench` on a tiny model: every figure the README's speed table reads is measured and written."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_bench_writes_speed_agreement_and_per_query_costs(tmp_path):
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "experiments.bench", "--samples", "2", "--naive-samples", "1", "--train-steps",
               "2", "--agreement-samples", "6", "--latency-samples", "4", "--trl-steps", "2", "--out", str(out),
               "model=tiny_random", "data=synthetic"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["naive_exact_top1_agreement"] == 1.0  # the trie ranking is the naive ranking
    assert report["beam_agreement_samples"] == 6 and report["beam_top1_agreement"] == 1.0  # the bound is exact
    assert report["beam_exact_top"] == 1
    for name in ("exact", "beam", "sasrec", "bert4rec"):
        assert report[f"latency_ms_{name}"] > 0 and report[f"latency_ms_{name}_batched"] > 0
        assert report[f"flops_per_query_{name}"] > 0
    # an LLM query costs more than a sequence-model query, and the beam never more than exact ranking
    assert report["flops_per_query_exact"] > 10 * report["flops_per_query_sasrec"]
    assert report["flops_per_query_beam"] <= report["flops_per_query_exact"]
    assert 0 < report["train_flop_fraction_of_peak"] < 1
    assert report["machine"]["load_average_1min_at_start"] >= 0
