"""experiments.defaults_shift: the same jobs of two sweeps paired sample by sample, one verdict line."""

import json

import pandas as pd
import pytest


def test_defaults_shift_pairs_the_same_job_of_two_sweeps_sample_by_sample(tmp_path):
    import json as json_

    import pandas as pd_

    from experiments.defaults_shift import compare

    roles = ["anchor"] * 6 + ["tail"] * 4
    for sweep, layout, correct in (("old", "runs/0", [1, 1, 0, 0, 1, 0, 0, 0, 1, 0]),
                                   ("new", "3", [1, 1, 1, 0, 1, 0, 1, 1, 0, 0])):
        folder = tmp_path / sweep / layout
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json_.dumps({"status": "completed", "stage_order": "joint", "seed": 0,
                                                          "test/samples_digest": "d", "test/weight_anchor": 0.7}))
        pd_.DataFrame({"sample_id": [f"s{i}" for i in range(10)], "role": roles, "correct": correct}).to_csv(
            folder / "test_predictions.csv", index=False)
    table = compare(tmp_path / "old", tmp_path / "new").set_index("metric")
    assert table.loc["acc_anchor", ["old", "new", "only new right", "only old right"]].tolist() == [0.5, 0.6667, 1, 0]
    assert table.loc["acc_tail", ["old", "new", "only new right", "only old right"]].tolist() == [0.25, 0.5, 2, 1]
    assert table.loc["acc_overall", "diff"] == pytest.approx(round(0.7 * (1 / 6) + 0.3 * 0.25, 4))
    assert (table["stage_order"] == "joint").all() and table["p_permutation"].between(0, 1).all()


def test_defaults_shift_never_prints_a_p_value_of_zero(tmp_path):
    # 30 of 40 samples right only in the new run: the Monte-Carlo p is about 1e-5, which rounding to four
    # decimals before Holm's adjustment turned into "Holm p = 0".
    from experiments.defaults_shift import compare, verdict

    for sweep, correct in (("old", [0] * 40), ("new", [1] * 30 + [0] * 10)):
        folder = tmp_path / sweep / "runs" / "0"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"status": "completed", "stage_order": "zero_shot",
                                                         "seed": 0, "test/samples_digest": "d",
                                                         "test/weight_anchor": 0.5}))
        pd.DataFrame({"sample_id": [f"s{i}" for i in range(40)], "role": ["anchor", "tail"] * 20,
                      "correct": correct}).to_csv(folder / "test_predictions.csv", index=False)
    table = compare(tmp_path / "old", tmp_path / "new")
    assert (table["p_permutation"] > 0).all() and (table["p_holm"] > 0).all()
    assert table["p_holm"].max() < 0.001
    line = verdict(table)
    assert line.startswith("**Moved beyond noise**") and "Holm p = 0)" not in line and "Holm p = 0.0)" not in line


def test_defaults_shift_takes_seeds_that_computed_the_same_predictions_for_one_replicate(tmp_path):
    """Zero-shot ranks with the untuned model: its seeds give identical predictions, in both sweeps. Taken as two
    replicates, a shift of 2 samples in 40 (sample-level p about 0.5) had a seed interval of zero width that
    excluded 0, and the verdict called it beyond noise."""
    from experiments.defaults_shift import compare, verdict

    for sweep, correct in (("old", [0] * 40), ("new", [1, 1] + [0] * 38)):
        for seed in (0, 1):
            folder = tmp_path / sweep / "runs" / str(seed)
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"status": "completed", "stage_order": "zero_shot",
                                                             "seed": seed, "test/samples_digest": "d",
                                                             "test/weight_anchor": 0.5}))
            pd.DataFrame({"sample_id": [f"s{i}" for i in range(40)], "role": ["anchor", "tail"] * 20,
                          "correct": correct}).to_csv(folder / "test_predictions.csv", index=False)
    table = compare(tmp_path / "old", tmp_path / "new")
    assert len(table) == 3 and (table["seed"] == "0, 1").all()  # one row per metric, both seeds named
    assert verdict(table).startswith("**Nothing moved beyond noise**")

    # a seed whose predictions differ is a replicate of its own
    new_seed1 = tmp_path / "new" / "runs" / "1" / "test_predictions.csv"
    pd.read_csv(new_seed1).assign(correct=[1, 1, 1] + [0] * 37).to_csv(new_seed1, index=False)
    assert sorted(compare(tmp_path / "old", tmp_path / "new")["seed"].unique()) == ["0", "1"]
    # different computations with equal differences: a zero-width seed interval is no evidence either
    equal = pd.DataFrame([{"stage_order": "joint", "seed": str(seed), "metric": "acc_tail", "diff": 0.0167,
                           "p_holm": 1.0} for seed in (0, 1)])
    assert verdict(equal).startswith("**Nothing moved beyond noise**")


def test_defaults_shift_says_when_the_two_sweeps_may_differ_in_precision_too(tmp_path):
    """The old paper-main runs predate the compute record (bf16 on Zen 4); a rerun on an AVX2-only CPU trains in
    fp32: a shift between them is not the defaults' alone, and the verdict line says so."""
    from experiments.defaults_shift import compute_caveat, main

    for sweep, compute in (("old", {}), ("new", {"device_type": "cpu", "compute_dtype": "float32"})):
        folder = tmp_path / sweep / "runs" / "0"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"status": "completed", "stage_order": "joint", "seed": 0,
                                                         "test/samples_digest": "d", "test/weight_anchor": 0.5,
                                                         **compute}))
        pd.DataFrame({"sample_id": ["a", "b"], "role": ["anchor", "tail"], "correct": [1, 0]}).to_csv(
            folder / "test_predictions.csv", index=False)
    main([str(tmp_path / "old"), str(tmp_path / "new"), "--out", str(tmp_path / "shift.md")])
    verdict_line = (tmp_path / "shift.md").read_text().split("\n\n")[1]
    assert verdict_line.startswith("**Nothing moved beyond noise**")
    assert "The compute differs or is unknown (old: not recorded; new: cpu/float32)" in verdict_line
    assert compute_caveat("cpu/float32", "cpu/float32") == ""
    assert "old: cpu/bfloat16; new: cpu/float32" in compute_caveat("cpu/bfloat16", "cpu/float32")
    # the old jobs' compute known from elsewhere (--old-compute): said as stated, and a mismatch still caveated
    main([str(tmp_path / "old"), str(tmp_path / "new"), "--out", str(tmp_path / "shift.md"),
          "--old-compute", "cpu/float32"])
    assert "Compute: cpu/float32 in both (the old jobs predate the record: theirs is as stated with --old-compute)" \
        in (tmp_path / "shift.md").read_text()
    assert "old: cpu/bfloat16 (stated, not recorded); new: cpu/float32" in compute_caveat(
        "not recorded", "cpu/float32", "cpu/bfloat16")
    # the same defaults on two machines (an fp32 and a bf16 rerun): the shift is the precision's, not the defaults'
    caveat = compute_caveat("cpu/float32", "cpu/bfloat16", same_defaults=True)
    assert "a shift is the precision's and the machine's" in caveat and "defaults'" not in caveat


def test_defaults_shift_says_in_one_line_whether_anything_moved_beyond_noise():
    from experiments.defaults_shift import verdict

    def table(diffs, p_holm):
        return pd.DataFrame([{"stage_order": "joint", "seed": seed, "metric": "acc_tail", "diff": d, "p_holm": p}
                             for seed, (d, p) in enumerate(zip(diffs, p_holm))])

    quiet = verdict(table([0.01, -0.02, 0.005], [1.0, 0.6, 1.0]))
    assert quiet.startswith("**Nothing moved beyond noise**") and "Holm over the 3 tests" in quiet
    assert "no seed interval yet" in verdict(table([0.01], [1.0]))
    # one job significant on its samples
    assert "joint seed 1 acc_tail -0.060 (Holm p = 0.003)" in verdict(table([0.0, -0.06, 0.01], [1.0, 0.003, 1.0]))
    # no single job significant, but all three seeds moved the same way: the seed interval excludes 0
    steady = verdict(table([0.030, 0.031, 0.029], [0.2, 0.2, 0.2]))
    assert steady.startswith("**Moved beyond noise**")
    assert "joint acc_tail +0.030 [+0.028, +0.032] over 3 seeds" in steady
