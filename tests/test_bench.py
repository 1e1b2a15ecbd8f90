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
               "2", "--rounds", "2", "--agreement-samples", "6", "--latency-samples", "4", "--trl-steps", "2", "--out", str(out),
               "model=tiny_random", "data=synthetic"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["naive_exact_top1_agreement"] == 1.0  # the trie ranking is the naive ranking
    assert report["beam_agreement_samples"] == 6 and report["beam_top1_agreement"] == 1.0  # the bound is exact
    assert report["beam_exact_top"] == 1 and report["beam_seed"] == "history"
    assert 0 <= report["beam_extra_round_share"] <= 1 and 0 < report["width_beam_top1_agreement"] <= 1
    rounds = report["beam_vs_prompt_forward_rounds"]  # the median of interleaved rounds' ratios
    assert len(rounds) == 2 and report["beam_vs_prompt_forward"] == pytest.approx(sum(rounds) / 2)
    assert report["width_beam_vs_prompt_forward"] > 0
    for name in ("exact", "beam", "sasrec", "bert4rec"):
        assert report[f"latency_ms_{name}"] > 0 and report[f"latency_ms_{name}_batched"] > 0
        assert report[f"flops_per_query_{name}"] > 0
    # an LLM query costs more than a sequence-model query, and the beam never more than exact ranking
    assert report["flops_per_query_exact"] > 10 * report["flops_per_query_sasrec"]
    assert report["flops_per_query_beam"] <= report["flops_per_query_exact"]
    assert 0 < report["train_flop_fraction_of_peak"] < 1
    shares = report["train_time_shares"]  # where the step's time goes: the parts add up to the whole
    assert shares["matmul"] > 0 and all(v >= 0 for v in shares.values())
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-3)
    assert report["train_attn_implementation"] == "eager"  # the loop's CPU default, measured as the loop runs
    assert report["train_flop_fraction_of_peak_without_dropout"] > 0
    assert report["machine"]["load_average_1min_at_start"] >= 0


@pytest.mark.slow
def test_train_variants_times_each_attention_kernel_with_and_without_dropout(tmp_path):
    out = tmp_path / "variants.json"
    result = subprocess.run([sys.executable, "-m", "experiments.train_variants", "--steps", "1", "--out", str(out),
                             "model=tiny_random", "data=synthetic"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert sorted(report["seconds_per_step"]) == ["eager, lora dropout 0.05", "eager, no lora dropout",
                                                  "sdpa, lora dropout 0.05", "sdpa, no lora dropout"]
    assert all(s > 0 for s in report["seconds_per_step"].values())
    assert report["speedup_vs_sdpa_with_dropout"]["sdpa, lora dropout 0.05"] == 1.0 and report["tokens"] > 0
