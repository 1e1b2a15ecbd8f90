"""The claims table decides verdicts from paired statistics (the GPU driver that runs it: test_gpu_driver.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from experiments import claims
from experiments.claims import CLAIMS, F_MARGIN, claims_table
from experiments.verdicts import Claim, equivalence, samples_needed, seeds_needed, verdict
from behaviorlm.collect import sample_weights
from behaviorlm.stats import clustered_se, sign_flip_test

TAIL_CLAIM = Claim("tail up", "paper-main", "progressive", "joint", "acc_tail", +1, 0.274)


def paired_row(diff, low, high, p, seeds=3, sample_diff=None, se=0.01, n_samples=600):
    return pd.Series({"mean_diff": diff, "ci_low": low, "ci_high": high, "p_permutation": p, "p_adjusted": p,
                      "n_seeds": seeds, "diff_sample_level": diff if sample_diff is None else sample_diff,
                      "se_sample_level": se, "n_samples": n_samples})


def test_verdict_needs_the_family_adjusted_test_and_the_seed_interval_pointing_the_same_way():
    assert verdict(TAIL_CLAIM, paired_row(0.04, 0.01, 0.07, 0.001), 0.1)[0] == "holds"
    assert verdict(TAIL_CLAIM, paired_row(-0.04, -0.07, -0.01, 0.001), 0.1)[0] == "does not hold"
    # significant on the samples but the seeds disagree: not decided
    decision, why = verdict(TAIL_CLAIM, paired_row(0.04, -0.02, 0.10, 0.001), 0.1)
    assert decision == "inconclusive at this scale" and "seed interval includes 0" in why
    # one seed: no interval over seeds, whatever the p-value
    decision, why = verdict(TAIL_CLAIM, paired_row(-0.04, float("nan"), float("nan"), 1e-5, seeds=1), 0.1)
    assert decision == "inconclusive at this scale" and "against the paper" in why and "one seed" in why
    # seeds that all gave the same difference: no interval (stats.interval_over_seeds), so not decided either
    decision, why = verdict(TAIL_CLAIM, paired_row(-0.04, float("nan"), float("nan"), 1e-5, seeds=2), 0.1)
    assert decision == "inconclusive at this scale" and "2 seeds gave the same difference" in why
    # both significant, but the sample-level difference points the other way: inconclusive, and it says why
    decision, why = verdict(TAIL_CLAIM, paired_row(0.04, 0.01, 0.07, 0.001, sample_diff=-0.01), 0.1)
    assert decision == "inconclusive at this scale" and "point different ways" in why


def test_power_at_80_percent_by_the_named_formulas():
    # samples: n' = n (se (z_.975 + z_.80) / effect)^2 = 600 (0.0109 x 2.8016 / 0.0461)^2 = 263.3 -> 264
    assert samples_needed(0.0109, 600, 0.0461) == 264
    assert samples_needed(0.0109, 600, 0.0) is None
    # seeds: sd from the 3-seed interval (half-width 0.0615 = t(2) sd / sqrt 3 -> sd 0.02475); the noncentral t
    # power of a paired t-test reaches 0.8 at 5 seeds for an effect of 0.046 (0.68 at 4)
    row = paired_row(-0.013, -0.075, 0.048, 0.22)
    assert seeds_needed(row, 0.046) == 5
    decision, why = verdict(Claim("overall up", "paper-main", "progressive", "joint", "acc_overall", +1, 0.204),
                            row, 0.226)
    assert decision == "inconclusive at this scale" and "needs about 5 seeds (now 3)" in why
    # 264 samples would do at the sample level, and 600 are there: more samples are not what it needs
    assert "or about" not in why and "600 test samples already give the sample-level test 80% power" in why
    # one seed, a noisier sample-level difference: no seed count to name, and the samples now fall short
    _, why = verdict(Claim("overall up", "paper-main", "progressive", "joint", "acc_overall", +1, 0.204),
                     paired_row(-0.013, float("nan"), float("nan"), 0.22, seeds=1, se=0.03), 0.226)
    assert "needs about 1,9" in why and "test samples (now 600)" in why and "seeds (now" not in why
    # a claim that accuracy drops names the paper's difference as a drop, in the orientation of the measured one
    drop = Claim("accuracy drops", "ablation-components", "no_aux", "full", "acc_overall", -1, 0.0471)
    _, why = verdict(drop, paired_row(0.001, float("nan"), float("nan"), 0.96, seeds=1), 0.190)
    assert "the paper's difference (-0.009)" in why and "rules out" not in why
    # an interval that holds 0 and lies wholly above the paper's drop: undecided, but a drop that large is ruled out
    decision, why = verdict(drop, paired_row(0.003, -0.001, 0.007, 1.0), 0.190)
    assert decision == "inconclusive at this scale"
    assert "the seed interval rules out a difference as large as the paper's (-0.009)" in why
    assert "rules out" not in verdict(drop, paired_row(0.003, -0.012, 0.018, 1.0), 0.190)[1]
    # an undecided interval beyond the paper's drop (a larger drop) does not rule out one as large as the paper's
    decision, why = verdict(drop, paired_row(-0.03, -0.05, -0.01, 0.2), 0.190)
    assert decision == "inconclusive at this scale" and "rules out" not in why


def test_sign_flip_test_equals_the_exact_enumeration_on_ten_samples_and_two_seeds():
    import itertools

    import numpy as np

    # per seed, 1 = the sample was predicted right; seeds are repeated measures of the same 10 samples
    method = np.array([[1, 1, 0, 1, 1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 0, 1, 1, 1, 1]], dtype=float)
    reference = np.array([[0, 1, 0, 0, 1, 0, 0, 1, 1, 0], [0, 1, 0, 0, 0, 0, 1, 1, 0, 0]], dtype=float)
    x, y = method.mean(axis=0), reference.mean(axis=0)  # a sample's labels flip in both seeds at once
    c = np.full(10, 0.1)
    observed = abs(np.sum(c * (x - y)))  # the mean over seeds of the per-seed accuracy differences (0.3, 0.4)
    assert observed == pytest.approx(0.35)
    flips = [abs(np.sum(c * np.array(signs) * (x - y))) for signs in itertools.product((1, -1), repeat=10)]
    exact = np.mean([f >= observed - 1e-12 for f in flips])  # 1024 sign patterns; 6 informative samples
    p, mc_error = sign_flip_test(x, y, c)
    assert p == pytest.approx(exact) and mc_error == 0.0  # few enough flips: enumerated, no Monte-Carlo error
    # D = (1, -.5, 1, .5, .5, 1) on the 6 informative samples, |sum| 3.5 of 4.5: only flipping nothing or one
    # 0.5 (4 patterns), or their mirror images (4), reach it: 8 of 64
    assert exact == pytest.approx(8 / 64)


def test_the_reweighted_statistic_and_its_clustered_standard_error_by_hand():
    import numpy as np

    roles = pd.Series(["anchor", "anchor", "tail", "tail", "tail"])
    c = sample_weights(roles, 0.7, "acc_overall")  # 0.7 over 2 anchor samples, 0.3 over 3 tail samples
    assert np.allclose(c, [0.35, 0.35, 0.1, 0.1, 0.1])
    assert np.allclose(sample_weights(roles, 0.7, "acc_tail"), [0, 0, 1 / 3, 1 / 3, 1 / 3])
    d = np.array([1.0, 0.0, -1.0, 0.0, 0.0])
    # Var = 0.7^2 var(1, 0)/2 + 0.3^2 var(-1, 0, 0)/3 = 0.49 x 0.5 / 2 + 0.09 x (1/3) / 3 = 0.1225 + 0.01
    assert clustered_se(d, roles, c) == pytest.approx(np.sqrt(0.1325))


def test_equivalence_within_the_margin_and_beyond_it():
    import numpy as np

    claim = Claim("F = 50 no better", "ablation-few-shot", "50", "20", "acc_overall", 0, margin=F_MARGIN)
    # inside: a 0.002 difference with se 0.004 on the samples; seeds 0.001-0.003 apart -> both TOSTs reject
    mine, ref = np.array([0.221, 0.212, 0.230]), np.array([0.219, 0.211, 0.227])
    inside = paired_row(0.002, -0.002, 0.006, 0.6, se=0.004)
    decision, why = equivalence(claim, inside, mine, ref)
    # sample TOST: max(P(Z > (0.002 + 0.02)/0.004), P(Z < (0.002 - 0.02)/0.004)) = Phi(-4.5) = 3.4e-6
    assert decision == f"equivalent within ±{F_MARGIN}" and "p = 3.4e-06 on the samples" in why
    # outside: +0.05, significant and beyond the margin on both levels
    outside = paired_row(0.05, 0.03, 0.07, 0.001, se=0.01)
    assert equivalence(claim, outside, mine + 0.05, ref)[0] == f"not equivalent (beyond ±{F_MARGIN})"
    # a small difference measured too loosely to tell
    loose = paired_row(0.005, -0.06, 0.07, 0.7, se=0.03)
    assert equivalence(claim, loose, np.array([0.2, 0.26, 0.17]), np.array([0.21, 0.2, 0.2]))[0] == \
        "inconclusive at this scale"
    # one seed (a sweep's first): the seed-level TOST cannot run, and the reason says so instead of "p = nan"
    decision, why = equivalence(claim, inside, mine[:1], ref[:1])
    assert decision == "inconclusive at this scale" and why.endswith("one seed: no test over seeds") \
        and "nan" not in why


def write_sweep(folder, rows, jobs):
    folder.mkdir()
    base = {"n_seeds": 3, "ci_low": 0.02, "ci_high": 0.08, "se_sample_level": 0.01, "n_samples": 600,
            "mix": "tail"}
    pd.DataFrame([{**base, "diff_sample_level": r["mean_diff"], **r} for r in rows]).to_csv(
        folder / "paired.csv", index=False)
    pd.DataFrame(jobs).to_csv(folder / "jobs.csv", index=False)


def test_claims_table_adjusts_the_family_with_holm_and_marks_missing_sweeps(tmp_path, monkeypatch):
    monkeypatch.setattr(claims, "SWEEP_FOLDER", {})  # every target in tmp_path/<target>, whatever results/ reads
    # four claims run, with p 0.01, 0.04, 0.03, 0.005: Holm multiplies the sorted p by 4, 3, 2, 1 and keeps them
    # monotone: 0.005 -> 0.02, 0.01 -> 0.03, 0.03 -> 0.06, 0.04 -> max(0.04, 0.06) = 0.06
    write_sweep(tmp_path / "paper-main", [
        {"method": "progressive", "reference": "joint", "metric": "acc_tail", "mean_diff": 0.05, "p_permutation": 0.01},
        {"method": "progressive", "reference": "joint", "metric": "acc_overall", "mean_diff": 0.05,
         "p_permutation": 0.04},
        {"method": "anchor_only", "reference": "joint", "metric": "acc_tail", "mean_diff": 0.05,
         "p_permutation": 0.03}],
        {"stage_order": ["progressive", "joint", "anchor_only"] * 3, "seed": [0] * 3 + [1] * 3 + [2] * 3,
         "test/acc_tail": [0.1, 0.05, 0.1] * 3, "test/acc_overall": [0.25, 0.2, 0.2] * 3})
    write_sweep(tmp_path / "ablation-components", [
        {"method": "no_aux", "reference": "full", "metric": "acc_overall", "mean_diff": 0.05, "p_permutation": 0.005}],
        {"variant": ["full", "no_aux"] * 3, "seed": [0, 0, 1, 1, 2, 2], "test/acc_overall": [0.25, 0.3] * 3,
         "device_type": ["cpu"] * 6, "compute_dtype": ["float32"] * 5 + ["bfloat16"]})  # seed 2's no_aux: bf16
    table = claims_table(tmp_path).set_index("claim")
    assert len(table) == len(CLAIMS)
    holm = table["holm_p"].dropna().to_dict()
    assert holm == {CLAIMS[0].text: "0.03", CLAIMS[1].text: "0.06", CLAIMS[2].text: "0.06", CLAIMS[3].text: "0.02"}
    assert table.loc[CLAIMS[0].text, "verdict"] == "holds"
    assert table.loc[CLAIMS[1].text, "verdict"] == "inconclusive at this scale"  # 0.04 alone, 0.06 in the family
    assert table.loc[CLAIMS[0].text, "measured"] == "+0.050 [+0.020, +0.080]"
    assert table.loc[CLAIMS[3].text, "reference_mean"] == pytest.approx(0.25)  # read by the swept key, variant
    # what the compared jobs ran in, where a reader can see a row that mixes machines
    assert table.loc[CLAIMS[3].text, "compute"] == "cpu/bfloat16, cpu/float32"
    assert table.loc[CLAIMS[0].text, "compute"] == "not recorded"
    assert (table.loc[[c.text for c in CLAIMS if c.target == "ablation-aux"], "verdict"] == "not run yet").all()


def write_efficiency_jobs(folder, ours_tail, sequence, n_ours=1000, digest="d"):
    """`make sample-efficiency`'s layout: behaviorlm/runs/N and sequence/runs/N, one metrics.json per job.
    sequence: {(method, k or None): (samples, tail accuracy per seed)}."""
    jobs = [("behaviorlm", {"method": "behaviorlm", "samples_per_behavior": 20, "n_train_examples_used": n_ours,
                            "test/acc_tail": tail, "seed": seed}) for seed, tail in enumerate(ours_tail)]
    jobs += [("sequence", {"method": method, "max_train_per_behavior": k, "n_train_examples_used": samples,
                           "test/acc_tail": tail, "seed": seed})
             for (method, k), (samples, tails) in sequence.items() for seed, tail in enumerate(tails)]
    for number, (side, metrics) in enumerate(jobs):
        job = folder / side / "runs" / str(number)
        job.mkdir(parents=True)
        (job / "metrics.json").write_text(json.dumps({**metrics, "status": "completed", "test/acc_overall": 0.2,
                                                      "test/samples_digest": digest}))


def test_sample_efficiency_claim_gets_a_verdict_from_the_curves(tmp_path):
    from experiments.verdicts import efficiency_verdict

    ours = [0.050, 0.055, 0.045]
    # nyc_cpu-like: the whole training set is 2x BehaviorLM's samples and SASRec stays below: not measurable
    small = tmp_path / "small"
    write_efficiency_jobs(small, ours, {("sasrec", 10): (500, [0.01, 0.012, 0.008]),
                                        ("sasrec", None): (2000, [0.028, 0.03, 0.026])})
    row = efficiency_verdict(small)
    assert row["verdict"] == "inconclusive at this scale" and row["measured"] == "largest ratio here 2.0x"
    # per-seed differences -0.022, -0.025, -0.019: sd 0.003, t(2) half-width 0.0075
    assert "sasrec k=all (2,000 samples, 2.0x): Δ tail -0.022 [-0.029, -0.015]" in row["why"]
    assert "a 100x gap cannot be measured" in row["why"]
    # the size that comes nearest BehaviorLM is named as each model's best, not as 'closest' (it may lie above)
    assert "; each sequence model at its best size: sasrec k=all" in row["why"]
    # BehaviorLM's first seed only (the few-shot sweep's first round): one pair a size, said so, no "[nan, nan]"
    first = tmp_path / "first"
    write_efficiency_jobs(first, ours[:1], {("sasrec", None): (2000, [0.028, 0.03, 0.026])})
    row = efficiency_verdict(first)
    assert row["seeds"] == "1" and "Δ tail -0.022 (one seed: no interval)" in row["why"] and "nan" not in row["why"]
    # a sequence model that beats BehaviorLM's tail with 5x its samples refutes 100x
    refuted = tmp_path / "refuted"
    write_efficiency_jobs(refuted, ours, {("bert4rec", 50): (5000, [0.07, 0.08, 0.075]),
                                          ("bert4rec", None): (200000, [0.09, 0.1, 0.095])})
    row = efficiency_verdict(refuted)
    assert row["verdict"] == "does not hold" and row["measured"] == "5.0x" and "bert4rec k=50" in row["why"]
    # below at every size up to 100x, and the data reach 100x: holds
    holds = tmp_path / "holds"
    write_efficiency_jobs(holds, ours, {("sasrec", 100): (50000, [0.02, 0.021, 0.019]),
                                        ("sasrec", None): (100000, [0.03, 0.031, 0.029])})
    assert efficiency_verdict(holds)["verdict"] == "holds"
    # jobs scored on different test sets are refused, not compared
    mixed = tmp_path / "mixed"
    write_efficiency_jobs(mixed, ours, {("sasrec", None): (2000, [0.02, 0.02, 0.02])})
    job = mixed / "sequence" / "runs" / "3" / "metrics.json"
    job.write_text(job.read_text().replace('"test/samples_digest": "d"', '"test/samples_digest": "other"'))
    with pytest.raises(SystemExit, match="2 different test sets"):
        efficiency_verdict(mixed)
    assert efficiency_verdict(tmp_path / "absent") is None
    # BehaviorLM's half read from the few-shot sweep (make sample-efficiency's layout), not from folder/behaviorlm
    shared = tmp_path / "shared"
    write_efficiency_jobs(shared, ours, {("sasrec", None): (2000, [0.028, 0.03, 0.026])})
    (shared / "behaviorlm").rename(tmp_path / "ablation-few-shot")
    assert efficiency_verdict(shared)["verdict"] == "not run yet"
    row = efficiency_verdict(shared, tmp_path / "ablation-few-shot")
    assert row["verdict"] == "inconclusive at this scale"
    assert "BehaviorLM (F=20, 1,000 samples) tail 0.050" in row["why"]
    # the sequence half alone: not run yet, saying what is there
    half = tmp_path / "half"
    write_efficiency_jobs(half, [], {("sasrec", None): (2000, [0.02, 0.02, 0.02])})
    row = efficiency_verdict(half)
    assert row["verdict"] == "not run yet" and "3 sequence-model jobs over 3 seeds" in row["why"]
    assert "no completed BehaviorLM job with F=20" in row["why"]


def test_claims_over_the_same_computations_are_one_test_in_the_family(tmp_path, monkeypatch):
    # ablation-aux's 0 vs 0.05 are ablation-components' no_aux vs full from the stage cache: identical predictions
    monkeypatch.setattr(claims, "SWEEP_FOLDER", {})  # every target in tmp_path/<target>, whatever results/ reads
    def predictions(hits):
        return pd.DataFrame({"sample_id": ["a", "b", "c"], "target": "X", "role": "anchor", "top5": "[]",
                             "correct": hits})

    def sweep(target, key, method, reference, hits_by_job):
        write_sweep(tmp_path / target, [{"method": method, "reference": reference, "metric": "acc_overall",
                                         "mean_diff": -0.05, "p_permutation": 0.01}],
                    {key: [reference, method] * 3, "seed": [0, 0, 1, 1, 2, 2], "job": list(range(6)),
                     "test/acc_overall": [0.3, 0.25] * 3})
        for job, hits in enumerate(hits_by_job):
            (tmp_path / target / "runs" / str(job)).mkdir(parents=True)
            predictions(hits).to_csv(tmp_path / target / "runs" / str(job) / "test_predictions.csv", index=False)

    hits = [[1, 1, 0], [1, 0, 0]] * 3
    write_sweep(tmp_path / "paper-main", [{"method": "progressive", "reference": "joint", "metric": "acc_tail",
                                           "mean_diff": 0.05, "p_permutation": 0.02}],
                {"stage_order": ["progressive", "joint"] * 3, "seed": [0, 0, 1, 1, 2, 2],
                 "test/acc_tail": [0.1, 0.05] * 3})
    sweep("ablation-components", "variant", "no_aux", "full", hits)
    sweep("ablation-aux", "aux_ratio", "0.0", "0.05", hits)
    table = claims_table(tmp_path).set_index("claim")
    no_aux, aux_zero = CLAIMS[3].text, CLAIMS[6].text
    # two tests, not three: p 0.01 -> 0.02 (x 2), 0.02 -> 0.02; three would give 0.03 for both 0.01s
    assert table.loc[no_aux, "holm_p"] == table.loc[aux_zero, "holm_p"] == "0.02"
    assert table.loc[CLAIMS[0].text, "holm_p"] == "0.02"
    assert f'the same computations as "{no_aux}"' in table.loc[aux_zero, "why"]
    assert "same computations" not in table.loc[no_aux, "why"]
    # the header counts the tests the Holm adjustment made, not the rows
    from experiments.claims import to_markdown
    assert "count once: 2 tests now)" in to_markdown(table.reset_index())
    # one seed's predictions differ: two computations, two tests
    predictions([0, 0, 0]).to_csv(tmp_path / "ablation-aux" / "runs" / "5" / "test_predictions.csv", index=False)
    table = claims_table(tmp_path).set_index("claim")
    assert table.loc[no_aux, "holm_p"] == table.loc[aux_zero, "holm_p"] == "0.03"
    assert "same computations" not in table.loc[aux_zero, "why"]
    assert "count once: 3 tests now)" in to_markdown(table.reset_index())


def test_the_claims_tables_in_the_docs_are_the_committed_results_and_make_claims_rewrites_only_them(tmp_path,
                                                                                                   monkeypatch):
    from experiments.claims import TABLE_BEGIN, TABLE_END, readme_table, to_markdown, with_table

    monkeypatch.chdir(ROOT)  # as `make claims` runs it: the rows name the results folder as given, relative
    table = claims_table(Path("results"))
    for page, expected in (("README.md", readme_table(table)), ("docs/results.md", to_markdown(table))):
        committed = (ROOT / page).read_text().split(TABLE_BEGIN + "\n", 1)[1].split(TABLE_END, 1)[0]
        assert committed == expected, f"{page}'s claims table is stale: run `make claims`"
    rows = readme_table(table).splitlines()
    # the anchor-only claim: its mix named, a decided verdict in bold; the tail claim: undecided, not in bold
    assert rows[4].startswith(f"| {CLAIMS[2].text} | ") and " tail | " in rows[4]
    assert rows[4].endswith(" | **does not hold** |")
    assert rows[2].startswith(f"| {CLAIMS[0].text} | ") and rows[2].endswith(" | inconclusive at this scale |")
    # make claims on a copy: the blocks are replaced, the text around them kept
    results, readme, docs = tmp_path / "results", tmp_path / "README.md", tmp_path / "results.md"
    readme.write_text(f"# intro\n\n{TABLE_BEGIN}\n| old | table |\n{TABLE_END}\n\nafter\n")
    docs.write_text(f"{TABLE_BEGIN}\n{TABLE_END}\n")
    make_claims = [sys.executable, "-m", "experiments.claims", "--results", "results", "--out", str(results),
              "--readme", str(readme), "--docs", str(docs)]
    subprocess.run(make_claims, cwd=ROOT, check=True, capture_output=True)
    assert readme.read_text() == f"# intro\n\n{TABLE_BEGIN}\n{readme_table(table)}{TABLE_END}\n\nafter\n"
    assert docs.read_text() == f"{TABLE_BEGIN}\n{to_markdown(table)}{TABLE_END}\n"
    # a page without its two lines: a one-line error naming the file, and nothing written, the claims files included
    readme.write_text("# no table here\n")
    (results / "claims.md").unlink()
    failed = subprocess.run(make_claims, cwd=ROOT, capture_output=True, text=True)
    assert failed.returncode != 0 and f"error: {readme}: no claims table to replace" in failed.stderr
    assert readme.read_text() == "# no table here\n" and not (results / "claims.md").exists()
    with pytest.raises(SystemExit, match=f"error: {readme}: no claims table"):
        with_table(readme, readme_table(table))
