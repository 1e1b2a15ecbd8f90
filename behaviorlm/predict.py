"""Use a tuned run on new data: load a run folder, rank the next behavior for any history.

    from behaviorlm.predict import BehaviorPredictor
    predictor = BehaviorPredictor.load("outputs/behaviorlm/2026-11-25_21-00-00")
    predictor.predict([[("Home (private)", "2013-01-07 08:10"), ("Subway", "2013-01-07 08:40")]], k=5)
    # -> [[("Office", 0.41), ("Coffee Shop", 0.12), ...]]

Probabilities are the candidates' sequence likelihoods normalised over the run's behavior vocabulary (a softmax
of the same scores the evaluator ranks by), so `predict` and the evaluation agree by construction.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from behaviorlm.config import CHOICES, ModelConfig, ScoringConfig
from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.models import autocast_dtype, load_backbone, resolve_device
from behaviorlm.prompts import PromptBuilder
from behaviorlm.behavior_model import BehaviorModel
from behaviorlm.utils import PROJECT_ROOT

log = logging.getLogger(__name__)
def cache_root() -> Path:
    """BEHAVIORLM_CACHE, else the project root's .cache: what the run configs read (conf/paths/default.yaml)."""
    return Path(os.environ.get("BEHAVIORLM_CACHE") or PROJECT_ROOT / ".cache")


def fetch_model_artifact(reference: str) -> Path:
    """`wandb:ENTITY/PROJECT/NAME:ALIAS`, a run's `model` artifact (adapter/, manifest.json, per_behavior.csv, as
    `Tracker.artifact` logs them), downloaded under $BEHAVIORLM_CACHE/artifacts: a folder laid out as a run's."""
    name = reference.removeprefix("wandb:")
    if name.count("/") != 2 or ":" not in name.rsplit("/", 1)[1]:
        raise FileNotFoundError(f"'{reference}' is not a model artifact reference: expected wandb:ENTITY/PROJECT/"
                                "NAME:ALIAS (e.g. wandb:me/behaviorlm-foursquare_nyc/model-ab12:progressive)")
    import wandb

    try:
        artifact = wandb.Api().artifact(name, type="model")
        return Path(artifact.download(root=str(cache_root() / "artifacts" / name.replace(":", "_"))))
    except Exception as err:  # no credentials, no network, no such artifact: one line, not a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"W&B model artifact '{name}' cannot be fetched ({first}); log in with "
                                "`wandb login` (or set WANDB_API_KEY) and sync offline runs first "
                                "(`wandb sync <run>/wandb/offline-run-*`)") from None


def history_sample(events: Sequence[tuple[str, object]], history_len: int, at: object = None,
                   user: str = "") -> Sample:
    """A sample whose history is the given (behavior, time) events, oldest first; the target is unknown.

    `at` is when the predicted event happens (the prompt states it when the run was trained that way); by default
    the time of the last history event.
    """
    times = [pd.Timestamp(t) for _, t in events][-history_len:]
    names = [str(b) for b, _ in events][-history_len:]
    when = pd.Timestamp(at) if at is not None else (times[-1] if times else pd.Timestamp(0))
    return Sample(user=user, time=when, history=tuple(names),
                  history_times=tuple((t.weekday(), t.hour) for t in times), target="")


class BehaviorPredictor:
    def __init__(self, behavior_model: BehaviorModel, history_len: int, min_history: int = 5):
        self.bm = behavior_model
        self.history_len = history_len
        self.min_history = min_history  # what the run's own test required (data.min_history)

    def use_scoring(self, mode: str, beam_width: int = 10, exact_top: int = 1, seed: str = "history") -> None:
        """exact (every name ranked) or beam (the top `exact_top` exact by branch and bound): seeded with the
        user's history (`seed`=history, one forward where the prediction is one of them) or the `beam_width`
        likeliest first tokens (none)."""
        if mode not in ("exact", "beam"):
            raise ValueError(f"scoring mode {mode!r}: expected exact | beam")
        if seed not in CHOICES["scoring.beam_seed"]:
            raise ValueError(f"beam seed {seed!r}: expected {' | '.join(CHOICES['scoring.beam_seed'])}")
        self.bm.scoring_mode, self.bm.beam_width, self.bm.beam_exact_top = mode, beam_width, exact_top
        self.bm.beam_seed = seed

    @property
    def vocab(self) -> BehaviorVocab:
        return self.bm.vocab

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", cache_dir: Optional[str | Path] = None,
             batch_size: int = 4) -> "BehaviorPredictor":
        from peft import PeftModel

        run_dir = fetch_model_artifact(str(run_dir)) if str(run_dir).startswith("wandb:") else Path(run_dir)
        manifest_path = run_dir / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"'{run_dir}' is not a BehaviorLM run folder: {manifest_path.name} is missing")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), manifest["model"])
        torch_device = resolve_device(device)
        local = run_dir / manifest["base_model_folder"] if manifest["base_model_folder"] == "base_model" else None
        base, tokenizer, _ = load_backbone(model_cfg, cache_dir or cache_root() / "models", torch_device,
                                           local_dir=local)
        model = PeftModel.from_pretrained(base, run_dir / "adapter").to(torch_device).eval()
        prompt = manifest["prompt"]
        prompts = PromptBuilder(tokenizer, prompt["formats"], prompt["use_chat_template"], prompt["system_prompt"],
                                seed=prompt["seed"], include_target_time=prompt.get("include_target_time", False))
        vocab = BehaviorVocab.from_dict(manifest["vocab"])
        # ranked as the run's own test was: older runs ranked with bf16 logits and without near-tie rescoring
        scoring = OmegaConf.merge(OmegaConf.structured(ScoringConfig), {
            "batch_size": batch_size, "fp32_logits": manifest.get("fp32_logits", False),
            "near_tie_epsilon": manifest.get("near_tie_epsilon", 0.0)})
        bm = BehaviorModel.build(model, tokenizer, prompts, vocab, torch_device,
                                 autocast_dtype(model_cfg.precision, torch_device), scoring)
        return cls(bm, manifest["history_len"], manifest.get("min_history", 5))

    def predict_samples(self, samples: Sequence[Sample], k: int = 5,
                        progress: Optional[str] = None) -> list[list[tuple[str, float]]]:
        """Top-k (behavior, probability) for each sample's history."""
        if not samples:
            return []
        scores = self.bm.scores(samples, progress=progress).astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.vocab.names[j], float(probs[i, j])) for j in row] for i, row in enumerate(top)]

    def predict(self, histories: Iterable[Sequence[tuple[str, object]]], k: int = 5, at: Optional[Sequence] = None,
                progress: Optional[str] = None) -> list[list[tuple[str, float]]]:
        """`histories[i]` is a list of (behavior, time) pairs, oldest first; `at[i]` when the next event happens."""
        histories = list(histories)
        whens = list(at) if at is not None else [None] * len(histories)
        samples = [history_sample(h, self.history_len, when) for h, when in zip(histories, whens)]
        unknown = sum(1 for s in samples for b in s.history if b not in self.vocab.train_counts)
        if unknown:
            log.warning("%d history events name behaviors this run never saw; they stay in the prompt as text",
                        unknown)
        return self.predict_samples(samples, k, progress)
