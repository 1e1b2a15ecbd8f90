"""tools.sweeps.harvest: only complete seeds of a background sweep reach the work tree, beside an older sweep."""
import json

import pytest

from tools.sweeps import harvest as harvest_module


def fake_sweep(root, statuses, group="paper-main-1", task="[]", compute_dtype=None):
    """A make-target sweep folder over seeds 0,1 x stage_order progressive,joint; statuses[i]: job i's status
    (None: not started). Each job folder holds an adapter, which must stay on the machine. task: the command line's
    overrides, e.g. "['seed=0']" for a round over seed 0 alone; compute_dtype: what the jobs record they ran in."""
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "multirun.yaml").write_text(
        f"hydra:\n  overrides:\n    task: {task}\n  sweeper:\n    params:\n"
        "      seed: 0,1\n      stage_order: progressive,joint\nseed: 0\n")
    (runs / ".wandb_group").write_text(group + "\n")
    jobs = [(seed, order) for seed in (0, 1) for order in ("progressive", "joint")]
    for number, ((seed, order), status) in enumerate(zip(jobs, statuses)):
        if status is None:
            continue
        job = runs / str(number)
        (job / "adapter").mkdir(parents=True, exist_ok=True)
        (job / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
        compute = {"device_type": "cpu", "compute_dtype": compute_dtype} if compute_dtype else {}
        (job / "metrics.json").write_text(json.dumps({"status": status, "seed": seed, "stage_order": order,
                                                      **compute}))
        (job / "test_predictions.csv").write_text("sample,hit\n0,1\n")
    return root


def test_only_seeds_whose_every_planned_job_completed_are_harvested(tmp_path):
    sweep = fake_sweep(tmp_path / "sweeps" / "paper-main", ["completed", "completed", "completed", "failed"])
    seeds, progress = harvest_module.complete_seeds(sweep)
    assert {seed: [f.name for f in folders] for seed, folders in seeds.items()} == {0: ["0", "1"]}
    assert progress == {0: "2/2 jobs", 1: "1/2 jobs"}

    sweep = fake_sweep(tmp_path / "sweeps" / "other", ["completed", None, None, None])
    assert harvest_module.complete_seeds(sweep)[0] == {}


def test_a_round_over_a_later_seed_alone_does_not_count_another_rounds_folders(tmp_path, capsys,
                                                                                 monkeypatch):
    """A round over seed=1 alone numbers its jobs from 0: its first job lands in folder 0 while folder 3 still holds
    seed 1's joint job of the full grid (a restored copy). Counted by seed, the two made seed 1 look complete and a
    harvest would have put seed 1's progressive job at seed 0's place; only folders at their place in the last
    sweep's grid count."""
    sweep = fake_sweep(tmp_path / "sweeps" / "ablation-b-rate", ["completed", None, None, "completed"],
                       task="['seed=1']")
    (sweep / "runs" / "0" / "metrics.json").write_text(json.dumps({"status": "completed", "seed": 1,
                                                                   "stage_order": "progressive"}))
    seeds, progress = harvest_module.complete_seeds(sweep)
    assert seeds == {} and progress == {1: "1/2 jobs"}
    assert "jobs 3 are not at their place in the last sweep's grid (seeds 1): left out" in capsys.readouterr().err

    (sweep / "runs" / "1").mkdir()  # the round's second job completes: seed 1 is its folders 0 and 1
    (sweep / "runs" / "1" / "metrics.json").write_text(json.dumps({"status": "completed", "seed": 1,
                                                                   "stage_order": "joint"}))
    seeds, progress = harvest_module.complete_seeds(sweep)
    assert {seed: [f.name for f in folders] for seed, folders in seeds.items()} == {1: ["0", "1"]}
    # where the committed folder records the full grid, folders 0 and 1 are seed 0's: refused, nothing copied
    monkeypatch.setattr(harvest_module.collect, "main", lambda argv: None)
    results = tmp_path / "results"
    held = fake_sweep(results / "ablation-b-rate", ["completed", "completed", None, None])
    with pytest.raises(SystemExit, match=r"job 0 of .* is seed 1, seed 0's place in .*multirun.yaml: run the seeds"):
        harvest_module.harvest(sweep, results, "ablation-b-rate")
    assert json.loads((held / "runs" / "0" / "metrics.json").read_text())["seed"] == 0
    # nor over a committed seed 0 whose record is as small as the round's
    fake_sweep(held, ["completed", "completed", None, None], task="['seed=0']")
    with pytest.raises(SystemExit, match=r"job 0 of .* is seed 1, and .*runs/0 holds seed 0's"):
        harvest_module.harvest(sweep, results, "ablation-b-rate")


def test_rounds_over_growing_seed_prefixes_are_harvested_into_one_folder(tmp_path, monkeypatch):
    """cpu_claims.sh's rounds: seed=0 harvested, then seed=0,1 (its jobs 2, 3 beyond the first record's grid)."""
    monkeypatch.setattr(harvest_module.collect, "main", lambda argv: None)
    results = tmp_path / "results"
    sweep = fake_sweep(tmp_path / "sweeps" / "ablation-aux", ["completed", "completed", None, None],
                       task="['seed=0']")
    dest = harvest_module.harvest(sweep, results, "ablation-aux")
    fake_sweep(sweep, ["completed"] * 4, task="['seed=0,1']")
    assert harvest_module.harvest(sweep, results, "ablation-aux") == dest
    assert sorted(p.name for p in (dest / "runs").iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert "task: ['seed=0,1']" in (dest / "runs" / "multirun.yaml").read_text()


def test_harvest_copies_complete_seeds_beside_an_older_sweep_and_leaves_weights_behind(tmp_path, monkeypatch):
    collected = []
    monkeypatch.setattr(harvest_module.collect, "main", collected.append)
    results = tmp_path / "results"
    (results / "paper-main" / "runs" / "0").mkdir(parents=True)  # an older sweep of the target, without a group
    (results / "paper-main" / "runs" / "0" / "metrics.json").write_text("{}")
    sweep = fake_sweep(tmp_path / "sweeps" / "paper-main", ["completed", "completed", "completed", None])

    assert harvest_module.harvest(sweep, results, "paper-main", dry_run=True) is None
    assert not (results / "paper-main-rerun").exists() and not collected
    dest = harvest_module.harvest(sweep, results, "paper-main")

    assert dest == results / "paper-main-rerun"
    assert sorted(p.name for p in (dest / "runs").iterdir()) == [".wandb_group", "0", "1", "multirun.yaml"]
    assert (dest / "runs" / "0" / "test_predictions.csv").is_file()
    assert not (dest / "runs" / "0" / "adapter").exists()
    assert (results / "paper-main" / "runs" / "0" / "metrics.json").read_text() == "{}"  # the older one untouched
    assert collected[0] == [str(dest), "--key", "stage_order", "--reference", "joint"]

    # the same sweep harvested again once seed 1 completes: into the same folder, now with both seeds
    job = sweep / "runs" / "3"
    job.mkdir()
    (job / "metrics.json").write_text(json.dumps({"status": "completed", "seed": 1, "stage_order": "joint"}))
    assert harvest_module.harvest(sweep, results, "paper-main") == dest
    assert sorted(p.name for p in (dest / "runs").iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]


def test_a_target_without_results_lands_in_its_own_folder_and_an_unknown_target_is_refused(tmp_path):
    sweep = fake_sweep(tmp_path / "sweeps" / "ablation-aux", ["completed"] * 4)
    results = tmp_path / "results"
    assert harvest_module.destination(sweep, results, "ablation-aux") == results / "ablation-aux"
    assert harvest_module.collect_arguments("ablation-aux") == ["--key", "aux_ratio", "--reference", "0.05"]
    with pytest.raises(SystemExit, match="no-such-target"):
        harvest_module.collect_arguments("no-such-target")


def test_a_round_over_fewer_seeds_does_not_replace_the_record_of_the_full_grid(tmp_path, monkeypatch):
    """cpu_claims.sh runs seed=0, then seed=0,1 ...: a later round over fewer seeds (paper-main's seed=0 round after
    its seeds 0 and 1 were harvested) must not leave a 2-job multirun.yaml beside 4 job folders, since collect would
    then drop seed 1's jobs as an earlier sweep's."""
    monkeypatch.setattr(harvest_module.collect, "main", lambda argv: None)
    results = tmp_path / "results"
    sweep = fake_sweep(tmp_path / "sweeps" / "ablation-aux", ["completed"] * 4)
    dest = harvest_module.harvest(sweep, results, "ablation-aux")
    assert "seed: 0,1" in (dest / "runs" / "multirun.yaml").read_text()

    fake_sweep(sweep, ["completed"] * 4, task="['seed=0']")  # the seed=0 round rewrites the sweep's record
    (sweep / "runs" / "0" / "run.log").write_text("reused\n")  # and adds to the log of a job it reused
    seeds, _ = harvest_module.complete_seeds(sweep)
    assert sorted(seeds) == [0]
    assert harvest_module.harvest(sweep, results, "ablation-aux") == dest
    assert "task: []" in (dest / "runs" / "multirun.yaml").read_text()  # the full grid's record stays
    assert sorted(p.name for p in (dest / "runs").iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    assert not (dest / "runs" / "0" / "run.log").exists()  # a job harvested before is not copied again

    fake_sweep(sweep, ["completed"] * 4, task="['seed=0,1']")  # an equal grid's record replaces it
    harvest_module.harvest(sweep, results, "ablation-aux")
    assert "task: ['seed=0,1']" in (dest / "runs" / "multirun.yaml").read_text()


def test_a_third_sweep_of_a_target_is_refused_rather_than_merged_into_the_rerun(tmp_path):
    """results/paper-main (old defaults) and results/paper-main-rerun (an fp32 rerun) both held: a bf16 rerun from
    a fresh machine has a W&B group of its own and must not land among the fp32 rerun's jobs."""
    results = tmp_path / "results"
    fake_sweep(results / "paper-main", ["completed"] * 4, group="paper-main-old")
    fake_sweep(results / "paper-main-rerun", ["completed"] * 4, group="paper-main-fp32")
    sweep = fake_sweep(tmp_path / "sweeps" / "paper-main", ["completed"] * 4, group="paper-main-bf16")
    with pytest.raises(SystemExit, match=r"paper-main-rerun both hold other sweeps' jobs \(not W&B group "
                                         r"paper-main-bf16\)"):
        harvest_module.harvest(sweep, results, "paper-main")
    fake_sweep(tmp_path / "sweeps" / "again", ["completed"] * 4, group="paper-main-fp32")  # the rerun's own: its
    assert harvest_module.destination(tmp_path / "sweeps" / "again", results, "paper-main") == (  # folder
        results / "paper-main-rerun")


def test_later_seeds_of_a_rerun_join_its_folder_even_where_the_targets_own_name_is_free(tmp_path):
    """results/avx2-fp32 holds the fp32 series' paper-main-rerun and no paper-main: its third seed, harvested from
    a machine that restored the first two, goes beside them, not into a new results/avx2-fp32/paper-main."""
    results = tmp_path / "results" / "avx2-fp32"
    fake_sweep(results / "paper-main-rerun", ["completed", "completed", None, None], group="paper-main-fp32")
    sweep = fake_sweep(tmp_path / "sweeps" / "paper-main", ["completed"] * 4, group="paper-main-fp32")
    assert harvest_module.destination(sweep, results, "paper-main") == results / "paper-main-rerun"
    other = fake_sweep(tmp_path / "sweeps" / "other", ["completed"] * 4, group="paper-main-bf16")
    assert harvest_module.destination(other, results, "paper-main") == results / "paper-main"


def test_a_harvest_that_would_mix_bf16_and_fp32_jobs_in_one_folder_is_refused_and_copies_nothing(tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setattr(harvest_module.collect, "main", lambda argv: None)
    results = tmp_path / "results"
    sweep = fake_sweep(tmp_path / "sweeps" / "ablation-aux", ["completed", "completed", None, None],
                       compute_dtype="float32")
    dest = harvest_module.harvest(sweep, results, "ablation-aux")  # seed 0 on an fp32 machine
    # the machine changed kind and the kept sweep folder goes on in bf16: seed 1 must not join seed 0's jobs
    fake_sweep(sweep, [None, None, "completed", "completed"], compute_dtype="bfloat16")
    with pytest.raises(SystemExit, match=r"ablation-aux/runs would mix compute kinds \(cpu/bfloat16: jobs 2, 3; "
                                         r"cpu/float32: jobs 0, 1\)"):
        harvest_module.harvest(sweep, results, "ablation-aux")
    assert sorted(p.name for p in (dest / "runs").iterdir() if p.name.isdigit()) == ["0", "1"]

    fake_sweep(sweep, [None, None, "completed", "completed"], compute_dtype="float32")  # the same kind: harvested
    harvest_module.harvest(sweep, results, "ablation-aux")
    assert sorted(p.name for p in (dest / "runs").iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]


def test_restore_brings_back_only_the_committed_jobs_of_the_sweep_commit_and_never_over_a_live_sweep(tmp_path):
    """A new machine starts the fp32 series again: the committed jobs the pinned commit ran return to the sweep
    folder (with the sweep's W&B group, for harvest to send the next seeds beside them); a job of another commit,
    or of a dirty tree, does not, and a sweep folder that exists is not touched."""
    results = tmp_path / "results"
    held = fake_sweep(results / "paper-main-rerun", ["completed"] * 4, group="paper-main-fp32")
    for number, (commit, dirty) in enumerate([("e8122e5abc", False), ("e8122e5abc", False), ("22be351def", False),
                                              ("e8122e5abc", True)]):
        (held / "runs" / str(number) / "run_info.json").write_text(json.dumps({"git_commit": commit,
                                                                               "git_dirty": dirty}))
    sweep = tmp_path / "sweeps" / "paper-main"
    assert harvest_module.restore(sweep, results, "paper-main", "e8122e5") == ["0", "1"]
    assert sorted(path.name for path in (sweep / "runs").iterdir()) == [".wandb_group", "0", "1", "multirun.yaml"]
    assert (sweep / "runs" / ".wandb_group").read_text().strip() == "paper-main-fp32"
    assert json.loads((sweep / "runs" / "1" / "metrics.json").read_text())["stage_order"] == "joint"
    (held / "runs" / "2" / "run_info.json").write_text(json.dumps({"git_commit": "e8122e5abc"}))
    assert harvest_module.restore(sweep, results, "paper-main", "e8122e5") == []  # live: left as it was
    assert not (sweep / "runs" / "2").exists()
    assert harvest_module.restore(tmp_path / "sweeps" / "few-shot", results, "ablation-few-shot", "e8122e5") == []
    assert not (tmp_path / "sweeps" / "few-shot").exists()


def test_restore_puts_another_targets_job_of_the_same_config_at_its_place_in_the_grid(tmp_path):
    """ablation-aux's 0 and 0.05 are ablation-components' no_aux and full, b-rate's 1e-4 is paper-main's
    progressive (one job key): a new machine copies them in at the grid's job numbers (seed-major, values in the
    ablation config's order) instead of running hours of tuning again; the target's own jobs come first."""
    results, commit = tmp_path / "results", {"git_commit": "e8122e5abc", "git_dirty": False}

    def committed(folder, key, values, seeds=(0, 1)):
        for number, (seed, value) in enumerate((seed, value) for seed in seeds for value in values):
            job = results / folder / "runs" / str(number)
            job.mkdir(parents=True)
            (job / "metrics.json").write_text(json.dumps({"status": "completed", "seed": seed, key: value}))
            (job / "run_info.json").write_text(json.dumps(commit))

    committed("ablation-components", "variant", ["full", "no_aux", "no_contrastive", "no_difficulty"])
    committed("paper-main-rerun", "stage_order", ["progressive", "joint", "anchor_only", "zero_shot"], seeds=(1,))
    sweeps = tmp_path / "sweeps"
    assert harvest_module.restore(sweeps / "ablation-aux", results, "ablation-aux", "e8122e5") == ["0", "1", "3", "4"]
    for number, (folder, source) in {"0": ("ablation-components", "1"), "1": ("ablation-components", "0"),
                                     "3": ("ablation-components", "5"), "4": ("paper-main-rerun", "0")}.items():
        copied = json.loads((sweeps / "ablation-aux" / "runs" / number / "metrics.json").read_text())
        assert copied == json.loads((results / folder / "runs" / source / "metrics.json").read_text())
    assert harvest_module.restore(sweeps / "ablation-b-rate", results, "ablation-b-rate", "e8122e5") == ["2"]
    assert json.loads((sweeps / "ablation-b-rate" / "runs" / "2" / "metrics.json").read_text())["seed"] == 1


def test_the_declared_equivalent_jobs_are_one_config(compose):
    """What EQUIVALENT_JOBS relies on, in today's configs: each pair composes to the same config once the keys a
    job key ignores are left out (the pinned commits' own keys were checked when the pairs were declared)."""
    from behaviorlm.cache import digest
    from behaviorlm.cache_keys import JOB_IGNORES, resolved, without

    def job_config(target, value):
        _, key, _ = harvest_module.sweep_grid(target)
        return digest(without(resolved(compose("experiment=nyc_cpu", "seed=1", f"{key}={value}")), JOB_IGNORES))

    for target, value, source, source_value in harvest_module.EQUIVALENT_JOBS:
        assert job_config(target, value) == job_config(source, source_value), (target, value)
    assert job_config("ablation-aux", "0.2") != job_config("ablation-components", "full")
