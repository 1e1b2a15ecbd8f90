"""The head/tail frontiers of test-time remedies on tuned runs, without retraining (`make ablation-tradeoff`).

    python -m experiments.tradeoff results/paper-main results/ablation-b-rate --alphas 0 0.25 0.5 0.75 \
        --taus -1 -0.5 0.25 0.5 1 --joint-taus 0.25 0.5 1 2 --wise-alphas 0.25 0.5 0.75 --out results/ablation-tradeoff

The completed jobs of every sweep given are pooled (a stage order and seed already taken from an earlier sweep is
not taken again); a progressive job whose B-Tuning learning rate differs from the first sweep's is its own method,
`progressive, B lr 0.0005`. For every progressive job: load its adapter (`behaviorlm predict`'s loader) and, for each
alpha, interpolate it exactly towards the A-tuned adapter it continued from (the anchor_only job of the same seed:
`train.b_tuning.merge_alpha` does the same inside a run), score the validation and test samples once, then rank them
with tau * (log p_train - log p_B) added for each tau, p_B being the B set the job recorded in selection.json
(`scoring.logit_adjustment.tau` inside a run). With `--joint-taus`, every joint job gets its own logit-adjustment
curve towards the uniform prior, -tau * log p_train (Menon et al., ICLR 2021; `target_prior=uniform` inside a run:
joint's tuned prior is the training prior, so the progressive direction would change nothing). The rebuilt test set
must be the job's (same digest) and the end points must reproduce the jobs (alpha 1, tau 0: the job; alpha 0: the
anchor_only job) within `--drift-samples` test samples (bf16 scoring of a differently padded batch is not
bit-identical); the script stops otherwise.

With `--wise-alphas`, every job of `--wise-orders` (progressive, joint, anchor_only) also gets a WiSE-FT curve
(Wortsman et al., CVPR 2022; `scoring.wise_ft_alpha` inside a run): its tuned LoRA update scaled by w, from w = 1
(the job, reproduced) to w = 0 (the untuned model, which must reproduce the seed's zero_shot job).

Each scoring is an entry of the stage cache (`ScoreCache`): a study cut short resumes where it stopped, and the end
points that curves share are scored once. It needs the tuned jobs' adapters, which a sweep folder holds on the
machine that ran it and a committed results folder does not: `--seeds` picks the seeds that machine ran.

Writes `jobs.csv` (method x seed x alpha x tau), `wise_ft.csv`, `table.md` (mean and Student-t 95% interval over
seeds of anchor, tail and overall accuracy along each curve, paired against the progressive job with exact McNemar
tests pooled over seeds; the operating point chosen on validation; and the frontier question: does any BehaviorLM
operating point beat every joint operating point on both axes?) and `anchor_vs_tail.png` (experiments/tradeoff_report.py
writes those from the rows this module scores). Choose an operating point on validation, never on the test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from behaviorlm.cache import StageCache, digest
from behaviorlm.cache_keys import backbone_content, evaluation_key
from behaviorlm.data.dataset import load_dataset
from behaviorlm.metrics import evaluate_rankings
from behaviorlm.models import interpolate_lora, scale_lora_update
from behaviorlm.predict import BehaviorPredictor
from behaviorlm.scoring import top_k_names
from behaviorlm.stages import logit_adjustment
from behaviorlm.sweeps import completed_jobs
from behaviorlm.tuned import run_overrides
from behaviorlm.utils import atomic_write_text, compose_config
from experiments.tradeoff_report import (METRICS, frontier_section, operating_points, plot, point_name, summarize,
                                         wise_ft_section, wise_point_name)


def job_config(job_dir: Path):
    overrides = [o for o in run_overrides(job_dir) if not o.startswith("hydra.")]
    # jobs run before `ablation` joined the defaults list appended it with '+'
    overrides = [o.removeprefix("+") if o.startswith("+ablation=") else o for o in overrides]
    return compose_config([*overrides, "logger=none"])


# This study's entries in the stage cache (cache.dir, as the jobs' own config gives it): one per scoring
SCORES = "tradeoff_scores"


class ScoreCache:
    """Every scoring of the study (validation or test samples, under one adapter state) by what decides it: the
    evaluation cache's key (the active adapter by content, `untuned` when every lora_B is zero; the samples,
    prompts, scoring settings, device, precision and code) with the adapter's scaling and the scoring settings the
    job itself ranked with. A study stopped by a session's end resumes where it was (each scoring is one entry), and
    the end points that curves share are scored once: WiSE-FT w = 1 is the job's own adapter, scored for its tau
    curve too, and w = 0 is the untuned model for every tuned job of a seed."""

    def __init__(self) -> None:
        self.scored = self.reused = 0

    def __call__(self, cfg, bm, samples, progress: str) -> np.ndarray:
        model = bm.model
        name = model.active_adapter
        adapter = {n: p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n}
        lora = model.peft_config[name]
        backbone = backbone_content(cfg, model, bm.tokenizer)
        key = digest({"evaluation": evaluation_key(cfg, adapter, samples, bm.vocab.names, None, bm.device, backbone),
                      "scaling": [lora.r, lora.lora_alpha],
                      "scored_as": [bm.scoring_mode, bm.beam_width, bm.beam_exact_top, bm.beam_seed,
                                    bm.scorer.batch_size, bm.fp32_logits]})
        cache = StageCache(cfg.cache.dir, cfg.cache.enabled)
        entry = cache.load(SCORES, key)
        if entry is not None:
            self.reused += 1
            print(f"{progress}: the scores of an earlier scoring (stage cache {SCORES}/{key})")
            return np.load(entry / "scores.npy")
        scores = bm.scores(samples, progress=progress)
        cache.save(SCORES, key, lambda folder: np.save(folder / "scores.npy", scores))
        self.scored += 1
        return scores


def b_set_targets(job_dir: Path) -> list[str]:
    """The B set's behaviors, one entry per selected sample (selection.json counts them by tier)."""
    per_behavior = json.loads((job_dir / "selection.json").read_text())["per_behavior"]
    return [name for name, tiers in per_behavior.items() for _ in range(sum(tiers.values()))]


def jobs_of(jobs: dict[Path, dict], stage_order: str) -> dict[int, Path]:
    """Per seed, the folder of the sweep's `stage_order` job (anchor_only: its adapter is the A-tuned adapter the
    seed's progressive job continued from, the same A-Tuning stage restored from the stage cache)."""
    return {metrics["seed"]: folder for folder, metrics in jobs.items() if metrics["stage_order"] == stage_order}


def check_same_a_tuning(job_dir: Path, a_dir: Path) -> None:
    """The interpolation's end point must be the A-Tuning this job continued from: same stage metrics."""
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (job_dir, a_dir))
    keys = [k for k in mine if k.startswith("a_tuning/val/")]
    if not keys or any(mine[k] != theirs.get(k) for k in keys):
        raise SystemExit(f"error: {a_dir} is not the A-Tuning {job_dir} continued from (a_tuning/val metrics "
                         "differ): cannot interpolate between them")


def load_job(job_dir: Path, batch_size: int | None):
    """(config, recorded metrics, dataset, behavior model) of a finished job, ranking as the job ranked."""
    cfg = job_config(job_dir)
    recorded = json.loads((job_dir / "metrics.json").read_text())
    dataset = load_dataset(cfg)
    predictor = BehaviorPredictor.load(job_dir, batch_size=batch_size or cfg.scoring.batch_size)
    bm = predictor.bm
    bm.scoring_mode, bm.beam_width = cfg.scoring.mode, cfg.scoring.beam_width
    # what the job scored with: jobs from before the bounded beam had none (the plain beam), jobs from before the
    # seeded beam the width beam
    scoring = OmegaConf.load(job_dir / ".hydra" / "config.yaml").scoring
    bm.beam_exact_top, bm.beam_seed = scoring.get("beam_exact_top", 0), scoring.get("beam_seed", "none")
    return cfg, recorded, dataset, bm


def check_drift(job_dir: Path, what: str, measured: dict, reference: dict, n_test: int, drift_samples: float) -> None:
    """An end point must reproduce the job it stands for, up to `drift_samples` test samples (bf16 scoring of a
    differently padded batch is not bit-identical)."""
    plain = "acc_overall_sample" if "acc_overall_sample" in measured else "acc_overall"  # unweighted hit share
    drift = abs(measured[plain] - reference[f"test/{plain}"]) * n_test
    if drift > drift_samples + 0.01:
        raise SystemExit(f"error: {job_dir}: {what} gives test accuracy {measured[plain]:.4f}, the job recorded "
                         f"{reference[f'test/{plain}']:.4f} ({drift:.0f} samples apart): this study does not "
                         "reproduce the run (try --batch-size 1)")


def wise_ft_curve(job_dir: Path, method: str, wise_alphas: list[float], zero_shot: dict | None,
                  batch_size: int | None, drift_samples: float, scores: ScoreCache
                  ) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray]:
    """WiSE-FT (scoring.wise_ft_alpha): the job's tuned LoRA update scaled by w (exact: every lora_B times w), from
    w = 1 (the job itself) to w = 0 (the untuned model: the sweep's zero_shot job), any stage order; the rows, per
    point the test hits, and each test sample's role (anchor or tail)."""
    cfg, recorded, dataset, bm = load_job(job_dir, batch_size)
    names, k = list(bm.vocab.names), cfg.scoring.top_k
    tuned = {name: p.detach().clone() for name, p in bm.model.named_parameters() if "lora_B" in name}
    rows, hits = [], {}
    for w in wise_alphas:
        with torch.no_grad():
            for name, param in bm.model.named_parameters():
                if name in tuned:
                    param.copy_(tuned[name])
        scale_lora_update(bm.model, w)
        val_scores = scores(cfg, bm, dataset.val, f"{method} validation, w {w}")
        test_scores = scores(cfg, bm, dataset.test, f"{method} test, w {w}")
        val, _, _ = evaluate_rankings(dataset.val, top_k_names(val_scores, names, k), bm.vocab, k)
        test, _, predictions = evaluate_rankings(dataset.test, top_k_names(test_scores, names, k), bm.vocab, k,
                                                 dataset.test_weights)
        for end, reference in ((1.0, recorded), (0.0, zero_shot)):
            if w == end and reference is not None:
                check_drift(job_dir, f"WiSE-FT w {w:g}", test, reference, len(dataset.test), drift_samples)
        rows.append({"method": method, "stage_order": recorded["stage_order"], "seed": cfg.seed, "wise_alpha": w,
                     "val_acc_overall": val["acc_overall"], **{f"test/{m}": test[m] for m in METRICS},
                     "test/samples_digest": test["samples_digest"]})
        hits[wise_point_name(method, w)] = predictions["correct"].to_numpy()
    return rows, hits, predictions["role"].to_numpy()


def study_job(job_dir: Path, method: str, taus: list[float], alphas: list[float], a_dir: Path | None,
              batch_size: int | None, drift_samples: float, scores: ScoreCache, target_prior: str = "train"
              ) -> tuple[list[dict], dict[str, np.ndarray], np.ndarray]:
    """One tuned job's curves: each alpha (towards its A-tuned adapter; progressive only) scored once, re-ranked with
    each tau towards `target_prior`; the rows, per point (`point_name`) the test hits, and each test sample's role
    (anchor or tail)."""
    cfg, recorded, dataset, bm = load_job(job_dir, batch_size)
    names, k = list(bm.vocab.names), cfg.scoring.top_k
    a_state = None
    if any(alpha != 1.0 for alpha in alphas):
        check_same_a_tuning(job_dir, a_dir)
        a_state = load_file(a_dir / "adapter" / "adapter_model.safetensors")
    # the prior the job's last tuning stage saw: progressive's B set, joint's training set
    targets = b_set_targets(job_dir) if recorded["stage_order"] == "progressive" else \
        [s.target for s in dataset.train]
    rows, hits = [], {}
    for alpha in alphas:
        if alpha != 1.0:
            interpolate_lora(bm.model, a_state, alpha)
        else:
            bm.model.set_adapter("default")
        val_scores = scores(cfg, bm, dataset.val, f"{method} validation, alpha {alpha}")
        test_scores = scores(cfg, bm, dataset.test, f"{method} test, alpha {alpha}")
        for tau in taus:
            offset = logit_adjustment(bm.vocab, targets, tau, target_prior)
            val, _, _ = evaluate_rankings(dataset.val, top_k_names(val_scores + offset, names, k), bm.vocab, k)
            test, _, predictions = evaluate_rankings(dataset.test, top_k_names(test_scores + offset, names, k),
                                                     bm.vocab, k, dataset.test_weights)
            if test["samples_digest"] != recorded["test/samples_digest"]:
                raise SystemExit(f"error: {job_dir}: the test set rebuilt here (digest {test['samples_digest']}) "
                                 f"is not the one the job was tested on ({recorded['test/samples_digest']})")
            # the end points reproduce the two jobs (alpha 1: this one; alpha 0: the anchor_only one)
            reference = {1.0: recorded, 0.0: json.loads((a_dir / "metrics.json").read_text()) if a_dir else None}
            if tau == 0 and reference.get(alpha) is not None:
                check_drift(job_dir, f"alpha {alpha}, tau 0", test, reference[alpha], len(dataset.test),
                            drift_samples)
            rows.append({"method": method, "seed": cfg.seed, "alpha": alpha, "tau": tau, "target_prior": target_prior,
                         "val_acc_overall": val["acc_overall"],
                         "recorded_test_acc_overall": recorded["test/acc_overall"],
                         **{f"test/{m}": test[m] for m in METRICS}, "test/samples_digest": test["samples_digest"]})
            hits[point_name(method, alpha, tau)] = predictions["correct"].to_numpy()
    return rows, hits, predictions["role"].to_numpy()


def pooled_jobs(sweep_dirs: list[Path], seeds: set[int] | None = None) -> dict[Path, dict]:
    """The completed jobs of all the sweeps, each with its `method`: the stage order, and for a progressive job
    whose B-Tuning learning rate differs from the first progressive job's, `progressive, B lr <rate>`. A method
    and seed already taken from an earlier sweep is not taken again (ablation-b-rate repeats paper-main's rate).
    `seeds`: only those seeds' jobs (the others are not read)."""
    pooled, seen, reference_rate = {}, set(), None
    for sweep_dir in sweep_dirs:
        for job_dir, metrics in completed_jobs(sweep_dir).items():
            if seeds is not None and metrics["seed"] not in seeds:
                continue
            if not (job_dir / ".hydra" / "config.yaml").is_file():
                raise SystemExit(f"error: {job_dir} has no .hydra/config.yaml: a committed results folder keeps the "
                                 "metrics only, and this study re-scores the sweep's own folders (config and "
                                 "adapter), on the machine that ran them")
            method = metrics["stage_order"]
            if method == "progressive":
                rate = float(OmegaConf.load(job_dir / ".hydra" / "config.yaml").train.b_tuning.learning_rate)
                reference_rate = rate if reference_rate is None else reference_rate
                method = method if rate == reference_rate else f"progressive, B lr {rate:g}"
            if (method, metrics["seed"]) in seen:
                print(f"{job_dir}: {method} seed {metrics['seed']} was taken from an earlier sweep; left out")
                continue
            seen.add((method, metrics["seed"]))
            adapter = job_dir / "adapter" / "adapter_model.safetensors"
            if metrics["stage_order"] != "zero_shot" and not adapter.is_file():
                raise SystemExit(f"error: {job_dir} (seed {metrics['seed']}) has no adapter/adapter_model.safetensors: "
                                 "a job restored from committed results keeps none (it lives on the machine that "
                                 "ran the job); study the seeds this machine ran (--seeds)")
            pooled[job_dir] = {**metrics, "method": method}
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="sweeps whose completed jobs are pooled")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0],
                        help="progressive's logit adjustment towards the training prior")
    parser.add_argument("--joint-taus", type=float, nargs="*", default=[],
                        help="joint's logit adjustment towards the uniform prior (0 is added): a curve per joint job")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0],
                        help="adapter interpolation weights (1 = the B-tuned adapter; anything else needs the "
                             "anchor_only job of the same seed, whose adapter is the A-tuned end point)")
    parser.add_argument("--wise-alphas", type=float, nargs="*", default=[],
                        help="WiSE-FT weights w of the tuned update (scoring.wise_ft_alpha; 1 and 0 are added): a "
                             "curve for each of --wise-orders, w = 0 being the untuned model")
    parser.add_argument("--wise-orders", nargs="+", default=["progressive", "joint", "anchor_only"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="study only these seeds' jobs (default: every seed; a tuned job needs its adapter, "
                             "which only the machine that ran it holds)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="scoring batch (default: the job's scoring.batch_size; 1 for runs made before beam "
                             "batching)")
    parser.add_argument("--drift-samples", type=float, default=1.0,
                        help="how many test samples the end points may differ from the recorded jobs by (a "
                             "different scoring batch pads differently, and bf16 scoring is not bit-identical)")
    args = parser.parse_args()
    taus, alphas = sorted(set([0.0, *args.taus])), sorted(set([1.0, *args.alphas]))
    joint_taus = sorted(set([0.0, *args.joint_taus])) if args.joint_taus else []
    wise_alphas = sorted(set([0.0, 1.0, *args.wise_alphas])) if args.wise_alphas else []
    finished = pooled_jobs(args.sweep_dirs, set(args.seeds) if args.seeds else None)
    a_jobs = {m["seed"]: folder for folder, m in finished.items() if m["stage_order"] == "anchor_only"}
    zero_shot = {m["seed"]: m for m in finished.values() if m["stage_order"] == "zero_shot"}
    rows, hits, roles, others, wise_rows = [], {}, {}, [], []
    scores = ScoreCache()
    args.out.mkdir(parents=True, exist_ok=True)
    for job_dir, metrics in finished.items():
        method, seed = metrics["method"], metrics["seed"]
        if wise_alphas and metrics["stage_order"] in args.wise_orders:
            curve_rows, curve_hits, roles[seed] = wise_ft_curve(job_dir, method, wise_alphas, zero_shot.get(seed),
                                                                args.batch_size, args.drift_samples, scores)
            wise_rows += curve_rows
            hits.setdefault(seed, {}).update(curve_hits)
            atomic_write_text(args.out / "wise_ft.csv", pd.DataFrame(wise_rows).to_csv(index=False))
        if metrics["stage_order"] == "progressive":
            a_dir = a_jobs.get(seed)
            if a_dir is None and alphas != [1.0]:
                raise SystemExit(f"error: no completed anchor_only job of seed {seed} in "
                                 f"{', '.join(map(str, args.sweep_dirs))}: adapter interpolation needs its A-tuned "
                                 "adapter")
            job_rows, job_hits, roles[seed] = study_job(job_dir, method, taus, alphas, a_dir, args.batch_size,
                                                        args.drift_samples, scores)
        elif metrics["stage_order"] == "joint" and joint_taus:
            job_rows, job_hits, roles[seed] = study_job(job_dir, method, joint_taus, [1.0], None, args.batch_size,
                                                        args.drift_samples, scores, target_prior="uniform")
        else:
            others.append({k: metrics.get(k) for k in ("stage_order", "seed", *(f"test/{m}" for m in METRICS))})
            continue
        rows += job_rows
        hits.setdefault(seed, {}).update(job_hits)
        # each finished job is kept: a long study can be read early
        atomic_write_text(args.out / "jobs.csv", pd.DataFrame(rows).to_csv(index=False))
    if not any(row["method"] == "progressive" for row in rows):
        raise SystemExit(f"error: no completed progressive job in {', '.join(map(str, args.sweep_dirs))}")
    jobs = pd.DataFrame(rows)
    if jobs["test/samples_digest"].nunique() != 1:
        raise SystemExit("error: the jobs were tested on different samples; they cannot be paired")
    others_frame = pd.DataFrame(others)
    wise = pd.DataFrame(wise_rows) if wise_rows else None
    table = (summarize(jobs, hits, others_frame) + (wise_ft_section(wise) if wise is not None else "")
             + frontier_section(operating_points(jobs, wise), hits, roles))
    atomic_write_text(args.out / "table.md", table)
    plot(jobs, others_frame, args.out / "anchor_vs_tail.png", wise)
    print(table)
    print(f"scorings: {scores.scored} computed, {scores.reused} reused from the stage cache ({SCORES})")


if __name__ == "__main__":
    main()
