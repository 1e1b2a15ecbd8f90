"""Stage-cache keys are derived from what each stage declares it does not read: every other config leaf, and the
facts the config does not show (samples, categories, code), must change the key of that stage and all below it."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from behaviorlm.cache_keys import (GLOBAL_IGNORES, STAGES, package_modules, resolved, root_cache_key,
                                   stage_key)
from behaviorlm.data.dataset import load_dataset
from behaviorlm.stage_plan import STAGE_PLANS

ROOT = Path(__file__).resolve().parents[1]


def leaves(config, prefix=""):
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path, value


def mutated(value):
    """Another value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, "changed"]
    if value is None:
        return 7
    if isinstance(value, dict):  # an empty group, such as extras: {}
        return {"changed": 1}
    raise TypeError(type(value))


def with_leaf(config, path, value):
    config = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


def declared_irrelevant(path, stage):
    ignores = {**GLOBAL_IGNORES, **STAGES[stage].ignores}
    parts = path.split(".")
    return any(".".join(parts[:i]) in ignores for i in range(1, len(parts) + 1))


def chain(config, order):
    """Each stage's key as the pipeline chains them (selection scores hang off difficulty selection's parent),
    with the stages whose settings reach it through the chain."""
    keys, readers, key, upstream = {}, {}, "root", []
    for stage in STAGE_PLANS[order]:
        if stage == "difficulty_selection":
            keys["selection_scores"] = stage_key(key, "selection_scores", config)
            readers["selection_scores"] = [*upstream, "selection_scores"]
        key = stage_key(key, stage, config)
        upstream = [*upstream, stage]
        keys[stage], readers[stage] = key, upstream
    return keys, readers


@pytest.mark.parametrize("order", ["progressive", "joint", "balanced_only", "tail_first"])
def test_every_config_leaf_changes_every_stage_key_it_is_not_declared_irrelevant_for(compose, order):
    config = resolved(compose(f"stage_order={order}"))
    base, readers = chain(config, order)
    checked = 0
    for path, value in leaves(config):
        changed, _ = chain(with_leaf(config, path, mutated(value)), order)
        for stage, key in base.items():
            relevant = any(not declared_irrelevant(path, reader) for reader in readers[stage])
            assert (changed[stage] != key) == relevant, (
                f"{path}: the {stage} key {'did not change' if relevant else 'changed'} although the leaf is "
                f"{'read' if relevant else 'declared irrelevant'} by {readers[stage]}")
            checked += 1
    assert checked > 100


def test_every_declared_path_exists_in_the_config(compose):
    config = resolved(compose())
    paths = {path for path, _ in leaves(config)}
    prefixes = {".".join(p.split(".")[:i]) for p in paths for i in range(1, len(p.split(".")) + 1)}
    declared = set(GLOBAL_IGNORES) | {path for stage in STAGES.values() for path in stage.ignores}
    assert declared <= prefixes, sorted(declared - prefixes)  # a typo would ignore nothing, silently


def test_the_paper_questions_the_cache_must_not_answer_from_stale_entries(compose):
    exact = resolved(compose())
    beam = resolved(compose("scoring.mode=beam"))
    no_category = resolved(compose("data.columns.category=null"))
    f50 = resolved(compose("samples_per_behavior=50"))
    base, _ = chain(exact, "progressive")
    # beam after exact: the kept epoch and the selection scores would differ
    assert chain(beam, "progressive")[0]["a_tuning"] != base["a_tuning"]
    assert chain(beam, "progressive")[0]["selection_scores"] != base["selection_scores"]
    assert chain(no_category, "progressive")[0]["difficulty_selection"] != base["difficulty_selection"]
    # and the F sweep still reuses A-Tuning and the selection scores
    assert chain(f50, "progressive")[0]["a_tuning"] == base["a_tuning"]
    assert chain(f50, "progressive")[0]["selection_scores"] == base["selection_scores"]
    assert chain(f50, "progressive")[0]["difficulty_selection"] != base["difficulty_selection"]
    # anchor_only and progressive share A-Tuning; a test-time remedy shares every stage
    assert chain(exact, "anchor_only")[0]["a_tuning"] == base["a_tuning"]
    remedy = resolved(compose("train.b_tuning.merge_alpha=0.5", "scoring.logit_adjustment.tau=1",
                              "scoring.wise_ft_alpha=0.5"))
    assert chain(remedy, "progressive")[0] == base


def test_root_key_follows_samples_categories_conversations_and_device(compose):
    cfg = compose("data=synthetic", "model=tiny_random", "logger=none")
    dataset = load_dataset(cfg)
    cpu = torch.device("cpu")
    key = root_cache_key(cfg, dataset, cpu, [[{"role": "user", "content": "hi"}]])
    assert root_cache_key(cfg, dataset, cpu, [[{"role": "user", "content": "hi"}]]) == key  # deterministic
    no_categories = dataclasses.replace(dataset, vocab=dataclasses.replace(dataset.vocab, categories={}))
    assert root_cache_key(cfg, no_categories, cpu, [[{"role": "user", "content": "hi"}]]) != key
    fewer = dataclasses.replace(dataset, splits={**dataset.splits, "train": dataset.train[1:]})
    assert root_cache_key(cfg, fewer, cpu, [[{"role": "user", "content": "hi"}]]) != key
    assert root_cache_key(cfg, dataset, cpu, [[{"role": "user", "content": "hello"}]]) != key
    assert root_cache_key(cfg, dataset, torch.device("meta"), [[{"role": "user", "content": "hi"}]]) != key


def test_the_code_fingerprint_covers_every_module_the_pipeline_imports():
    modules = set(package_modules())
    # direct and indirect imports, lazy ones inside functions included (baselines)
    assert {"pipeline.py", "stages.py", "training.py", "scoring.py", "selection.py", "metrics.py", "prompts.py",
            "models.py", "data/dataset.py", "data/logs.py", "data/foursquare.py", "data/samples.py",
            "data/conversations.py", "baselines.py"} <= modules
    assert "dashboard.py" not in modules  # not imported by the pipeline: editing it keeps the cache


def test_a_cpu_without_native_bf16_never_takes_another_kinds_results(compose, monkeypatch):
    """model.precision=auto computes in bf16 on a Zen 4 or AMX CPU and in fp32 on a Zen 3: the same config, other
    numbers. The stage keys and a finished job's key follow what the machine computes in."""
    from behaviorlm import models
    from behaviorlm.cache_keys import job_key

    cfg = compose("data=synthetic", "model=tiny_random", "logger=none", "model.precision=auto")
    dataset, cpu = load_dataset(cfg), torch.device("cpu")
    keys = {}
    for native in (True, False):
        monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda native=native: native)
        keys[native] = (root_cache_key(cfg, dataset, cpu), job_key(cfg, dataset, cpu))
    assert keys[True][0] != keys[False][0] and keys[True][1] != keys[False][1]
    fp32 = compose("data=synthetic", "model=tiny_random", "logger=none", "model.precision=fp32")
    assert root_cache_key(fp32, dataset, cpu) == root_cache_key(fp32, dataset, cpu)  # deterministic


def test_a_finished_job_is_known_by_its_inputs_content_not_by_where_they_lie(compose, hand_log, tmp_path):
    """A sweep run again from a clone in another folder (its bundled data, its conversations at other absolute
    paths) reuses the jobs that finished: the same log and corpus give the same job key; another category of one
    behavior, or another conversation, gives another."""
    import gzip
    import shutil

    from behaviorlm.cache_keys import job_key

    corpus = ROOT / "behaviorlm" / "bundled" / "conversations" / "alpaca_en_demo.json.gz"
    keys = {}
    for folder, log, conversations in (("a", hand_log, None), ("b", hand_log, None),
                                       ("c", hand_log.replace({"category": {"Sport": "Leisure"}}), None),
                                       ("d", hand_log, "edited")):
        (tmp_path / folder).mkdir()
        log.to_csv(tmp_path / folder / "log.csv", index=False)
        aux = tmp_path / folder / corpus.name
        shutil.copy(corpus, aux)
        if conversations:  # the first instruction of the corpus reworded
            records = json.loads(gzip.decompress(aux.read_bytes()))
            records[0]["instruction"] += " Please."
            aux.write_bytes(gzip.compress(json.dumps(records).encode()))
        cfg = compose("data=csv", f"data.path={tmp_path / folder / 'log.csv'}", "data.min_history=2",
                      "data.split.test_fraction=0.3", "data.split.val_fraction=0", "model=tiny_random", "logger=none",
                      "aux_ratio=0.05", f"aux.path={aux}",
                      f"paths.output_dir={tmp_path / folder / 'out'}")
        keys[folder] = job_key(cfg, load_dataset(cfg), torch.device("cpu"))
    assert keys["a"] == keys["b"]
    assert keys["c"] != keys["a"] and keys["d"] != keys["a"]
