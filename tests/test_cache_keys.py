"""The stage cache's root key changes with what the stages read that the config keys alone do not show."""

import dataclasses

import torch

from behaviorlm.data.dataset import load_dataset
from behaviorlm.cache_keys import STAGE_CODE, root_cache_key


def test_root_key_follows_scoring_categories_and_code(compose):
    cfg = compose("data=synthetic", "model=tiny_random", "logger=none")
    dataset = load_dataset(cfg)
    cpu = torch.device("cpu")
    key = root_cache_key(cfg, dataset, cpu)
    assert root_cache_key(cfg, dataset, cpu) == key  # deterministic
    # beam after exact: early stopping and selection scores would differ, so nothing may be reused
    assert root_cache_key(compose("data=synthetic", "model=tiny_random", "logger=none", "scoring.mode=beam"),
                          dataset, cpu) != key
    # the same samples without categories (data.columns.category=null): contrastive selection would differ
    no_categories = dataclasses.replace(dataset, vocab=dataclasses.replace(dataset.vocab, categories={}))
    assert root_cache_key(cfg, no_categories, cpu) != key
    # the modules that choose each stage's examples, early stopping's accuracy and the data are fingerprinted
    assert {"pipeline.py", "metrics.py", "data/dataset.py", "data/logs.py", "data/foursquare.py"} <= set(STAGE_CODE)
