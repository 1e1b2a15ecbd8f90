"""Baselines on the same samples, splits and metrics as BehaviorLM (`method=...` in run.py).

  popularity     rank behaviors by training-target frequency
  user_frequent  rank by the user's own training-target frequency, then by popularity
  markov         first-order transitions: P(next | last behavior) from training samples, then popularity
  sasrec         Kang & McAuley 2018: causal self-attention over behavior-ID + position embeddings
  bert4rec       Sun et al. 2019: bidirectional self-attention trained with the cloze (masked item) objective

Every learned model is fitted on training samples only, selected on validation accuracy, and scored on test. The
sequence models score all behaviors (full softmax, no negative sampling), like the LLM's exact ranking, and with
`baselines.time_features` (the default) they see what the LLM's prompt states: the weekday and hour of every
history event and of the predicted one, as embeddings added to each position (SASRec: the event's own time and
the next event's, the one it predicts; BERT4Rec: each event's time, the [MASK] slot carrying the target's). The
counting baselines stay time-free.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from behaviorlm.data.dataset import BehaviorDataset
from behaviorlm.data.samples import Sample
from behaviorlm.metrics import compute_metrics, evaluate_rankings, write_test_outputs

log = logging.getLogger(__name__)
PAD, MASK = 0, 1  # reserved ids; behavior j has id j + 2


def _rank(scores: np.ndarray, names: Sequence[str], k: int) -> list[list[str]]:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[names[j] for j in row] for row in top]


class CountingBaseline:
    """popularity | user_frequent | markov: counts over training samples, ties broken by popularity."""

    def __init__(self, kind: str, names: Sequence[str]):
        self.kind = kind
        self.names = list(names)
        self.index = {n: j for j, n in enumerate(self.names)}

    def fit(self, train: Sequence[Sample]) -> "CountingBaseline":
        self.popularity = np.zeros(len(self.names))
        self.by_key: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(len(self.names)))
        for sample in train:
            j = self.index[sample.target]
            self.popularity[j] += 1
            key = self._key(sample)
            if key is not None:
                self.by_key[key][j] += 1
        return self

    def _key(self, sample: Sample) -> Optional[str]:
        if self.kind == "user_frequent":
            return sample.user
        if self.kind == "markov":
            return sample.history[-1] if sample.history else None
        return None

    def scores(self, samples: Sequence[Sample]) -> np.ndarray:
        # Popularity enters as a fraction below 1, so it only orders behaviors the key's counts leave tied.
        tie_break = self.popularity / (self.popularity.sum() + 1.0)
        out = np.tile(tie_break, (len(samples), 1))
        for i, sample in enumerate(samples):
            key = self._key(sample)
            if key is not None and key in self.by_key:
                out[i] += self.by_key[key]
        return out


class SequenceEncoder(nn.Module):
    """Behavior-ID + learned position embeddings into a stack of self-attention blocks (causal or not)."""

    def __init__(self, n_items: int, max_len: int, hidden: int, layers: int, heads: int, dropout: float,
                 causal: bool, time_features: bool = False):
        super().__init__()
        self.causal = causal
        self.heads = heads
        self.items = nn.Embedding(n_items + 2, hidden, padding_idx=PAD)
        self.positions = nn.Embedding(max_len + 1, hidden)
        self.time_features = time_features
        if time_features:  # id 0 = no time (padding); weekday w -> w + 1, hour h -> h + 1
            self.weekday, self.hour = nn.Embedding(8, hidden, padding_idx=0), nn.Embedding(25, hidden, padding_idx=0)
            tables = [self.weekday, self.hour]
            if causal:  # SASRec position i predicts event i + 1: it also sees when that event happens
                self.next_weekday = nn.Embedding(8, hidden, padding_idx=0)
                self.next_hour = nn.Embedding(25, hidden, padding_idx=0)
                tables += [self.next_weekday, self.next_hour]
            # Start at zero: the model begins as the time-free one and moves the time embeddings only as far as
            # the data supports. With the default N(0, 1) init, four random time vectors swamp the item vector
            # and, on 2,000 NYC samples, cost SASRec 0.04 and BERT4Rec 0.11 of overall accuracy (3 seeds).
            for table in tables:
                nn.init.zeros_(table.weight)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(hidden, heads, hidden * 4, dropout, batch_first=True, norm_first=True,
                                           activation="gelu")
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.out_bias = nn.Parameter(torch.zeros(n_items + 2))

    def forward(self, ids: torch.Tensor, times: Optional[torch.Tensor] = None,
                next_times: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, length) ids -> (batch, length, items) logits over all ids (output tied to the embeddings).
        `times` / `next_times`: (batch, length, 2) weekday and hour ids of each position's event / of the next."""
        length = ids.shape[1]
        x = self.items(ids) + self.positions(torch.arange(length, device=ids.device))[None]
        if self.time_features:
            x = x + self.weekday(times[..., 0]) + self.hour(times[..., 1])
            if self.causal:
                x = x + self.next_weekday(next_times[..., 0]) + self.next_hour(next_times[..., 1])
        # One mask for padding and causality; every query may see itself, so no row is fully masked (NaN).
        allowed = (ids != PAD)[:, None, :].expand(-1, length, -1)
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=ids.device)
        x = self.blocks(self.dropout(x), mask=(~allowed).repeat_interleave(self.heads, dim=0))
        return self.norm(x) @ self.items.weight.T + self.out_bias


@dataclass
class SequenceModelConfig:
    hidden: int
    layers: int
    heads: int
    dropout: float
    learning_rate: float
    batch_size: int
    max_epochs: int
    patience: int
    mask_prob: float = 0.2
    time_features: bool = True


class SequenceRecommender:
    """SASRec (causal, predicts the next item at the last position) or BERT4Rec (cloze; predicts a final [MASK])."""

    def __init__(self, kind: str, names: Sequence[str], max_len: int, config: SequenceModelConfig, seed: int):
        self.kind, self.names, self.max_len, self.config, self.seed = kind, list(names), max_len, config, seed
        self.index = {n: j + 2 for j, n in enumerate(self.names)}
        torch.manual_seed(seed)
        self.model = SequenceEncoder(len(self.names), max_len + 1, config.hidden, config.layers, config.heads,
                                     config.dropout, causal=kind == "sasrec", time_features=config.time_features)

    def _rows(self, samples: Sequence[Sample], with_target: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded rows of the history followed by the target event's slot: ids (the target when training;
        at inference [MASK] for BERT4Rec, PAD for SASRec, which never reads that column) and (weekday, hour) ids
        of every event, the target's included (its time is known at prediction, as in the prompt)."""
        width = self.max_len + 1
        ids = torch.full((len(samples), width), PAD, dtype=torch.long)
        times = torch.zeros((len(samples), width, 2), dtype=torch.long)
        for r, sample in enumerate(samples):
            last = self.index[sample.target] if with_target else (MASK if self.kind == "bert4rec" else PAD)
            seq = [self.index.get(b, PAD) for b in sample.history[-self.max_len:]] + [last]
            stamps = list(sample.history_times[-self.max_len:]) + [(sample.time.weekday(), sample.time.hour)]
            ids[r, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            times[r, width - len(seq):] = torch.tensor(stamps, dtype=torch.long) + 1
        return ids, times

    def _forward(self, ids: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """SASRec reads every column but the target slot, each position also told the next event's time;
        BERT4Rec reads the whole row."""
        if self.kind == "sasrec":
            return self.model(ids[:, :-1], times[:, :-1], times[:, 1:])
        return self.model(ids, times)

    def _loss(self, ids: torch.Tensor, times: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if self.kind == "sasrec":
            # Every position predicts the next one; the loss covers all real transitions of the window.
            logits = self._forward(ids, times)
            targets = ids[:, 1:].clone()
            targets[ids[:, :-1] == PAD] = PAD
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=PAD)
        # BERT4Rec: mask random items (mask_prob) and, as the paper does, always the last one half of the time.
        real = ids != PAD
        masked = torch.from_numpy(rng.random(ids.shape) < self.config.mask_prob) & real
        last_only = torch.from_numpy(rng.random(ids.shape[0]) < 0.5)
        masked[last_only] = False
        masked[last_only, -1] = True
        masked[~masked.any(1), -1] = True
        inputs = ids.masked_fill(masked, MASK)
        logits = self._forward(inputs, times)
        targets = ids.masked_fill(~masked, PAD)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=PAD)

    @torch.no_grad()
    def scores(self, samples: Sequence[Sample]) -> np.ndarray:
        self.model.eval()
        out = []
        for start in range(0, len(samples), 512):
            ids, times = self._rows(samples[start:start + 512], with_target=False)
            # SASRec: the last history position predicts the next event; BERT4Rec: the [MASK] slot.
            logits = self._forward(ids, times)[:, -1]
            out.append(logits[:, 2:].numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.names)))

    def fit(self, train: Sequence[Sample], val: Sequence[Sample]) -> list[dict]:
        rng = np.random.default_rng(self.seed)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate)
        ids, times = self._rows(train, with_target=True)
        best, best_state, stale, history = -1.0, None, 0, []
        for epoch in range(1, self.config.max_epochs + 1):
            self.model.train()
            order = rng.permutation(len(train))
            total = 0.0
            for start in range(0, len(order), self.config.batch_size):
                batch = order[start:start + self.config.batch_size]
                loss = self._loss(ids[batch], times[batch], rng)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            accuracy = _accuracy(self.scores(val), val, self.names) if val else float("nan")
            history.append({"epoch": epoch, "loss": total / math.ceil(len(order) / self.config.batch_size),
                            "val_acc": accuracy})
            if not val or accuracy > best:
                best, stale = accuracy, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                stale += 1
                if stale >= self.config.patience:
                    break
        self.model.load_state_dict(best_state)
        return history


def _accuracy(scores: np.ndarray, samples: Sequence[Sample], names: Sequence[str]) -> float:
    predicted = np.argmax(scores, axis=1)
    return float(np.mean([names[p] == s.target for p, s in zip(predicted, samples)]))


def build_baseline(cfg: DictConfig, dataset: BehaviorDataset):
    names = dataset.vocab.names
    if cfg.method in ("popularity", "user_frequent", "markov"):
        return CountingBaseline(cfg.method, names)
    params = cfg.baselines[cfg.method]
    config = SequenceModelConfig(**params, time_features=cfg.baselines.time_features)
    return SequenceRecommender(cfg.method, names, cfg.data.history_len, config, cfg.seed)


def fit_baseline(model, train: Sequence[Sample], val: Sequence[Sample]) -> list[dict]:
    if isinstance(model, CountingBaseline):
        model.fit(train)
        return []
    return model.fit(train, val)


def run_baseline(cfg: DictConfig, dataset: BehaviorDataset, out: Path) -> dict:
    """Fit on train (select on val), evaluate on test; the same metric keys as BehaviorLM."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    model = build_baseline(cfg, dataset)
    history = fit_baseline(model, dataset.train, dataset.val)
    k = cfg.scoring.top_k
    metrics: dict = {f"{cfg.method}/train/seconds": time.perf_counter() - started,
                     f"{cfg.method}/train/epochs": len(history), "n_train_examples_used": len(dataset.train),
                     "time_features": bool(cfg.baselines.time_features and isinstance(model, SequenceRecommender))}
    if dataset.val:
        val_metrics, _ = compute_metrics([s.target for s in dataset.val],
                                         _rank(model.scores(dataset.val), dataset.vocab.names, k), dataset.vocab, k)
        metrics.update({f"{cfg.method}/val/{key}": v for key, v in val_metrics.items()})
    rankings = _rank(model.scores(dataset.test), dataset.vocab.names, k)
    test_metrics, table, predictions = evaluate_rankings(dataset.test, rankings, dataset.vocab, k,
                                                         dataset.test_weights)
    metrics.update({f"test/{key}": v for key, v in test_metrics.items()})
    write_test_outputs(out, table, predictions)
    return metrics
