"""Tiny in-process models and samples for the tests (no download, no network)."""

import torch
from omegaconf import OmegaConf

from behaviorlm.config import ModelConfig
from behaviorlm.data.samples import build_samples
from behaviorlm.data.synthetic import generate_synthetic_log
from behaviorlm.models import load_backbone
from behaviorlm.prompts import render_instruction


def tiny_model_and_samples(seed: int = 0, n_users: int = 12):
    events = generate_synthetic_log(n_users=n_users, events_per_user=12, seed=seed)
    samples, _ = build_samples(events, 4, 3)
    names = sorted(events["behavior"].unique())
    texts = names + [render_instruction(s.history, s.history_times, f) for s in samples[:40]
                     for f in ("list", "sentence", "log")]
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                          {"name": "tiny", "source": "tiny_random", "precision": "fp32",
                           "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "vocab_size": 300}})
    model, tokenizer, _ = load_backbone(cfg, "unused", torch.device("cpu"), seed=seed, tokenizer_texts=texts)
    return model, tokenizer, samples, names, events
