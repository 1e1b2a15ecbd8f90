"""The one experiment function behind `run.py`: data -> model -> stages of `stage_order` -> held-out test.

    cfg -> validate -> load dataset -> load backbone + LoRA -> for stage in STAGE_PLANS[stage_order]: run it,
    validate -> test -> metrics.json (+ per_behavior.csv, selection.json, the adapter and a manifest) -> W&B

Every number it prints comes from scoring held-out samples (validation after each stage, test at the end).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from peft import get_peft_model_state_dict

from behaviorlm.behavior_model import BehaviorModel
from behaviorlm.cache import StageCache
from behaviorlm.cache_keys import job_key, resolved, root_cache_key, stage_key
from behaviorlm.config import validate_config
from behaviorlm.data.conversations import load_conversations
from behaviorlm.data.dataset import BehaviorDataset, load_dataset
from behaviorlm.data.samples import subsample
from behaviorlm.distributed import LOCAL, Dist
from behaviorlm.metrics import evaluate_rankings, format_results_table, write_test_outputs
from behaviorlm.models import (adopt_as_default, add_lora, autocast_dtype, compute_dtype, interpolate_lora,
                               load_backbone, resolve_device, scale_lora_update)
from behaviorlm.prompts import PromptBuilder, render_instruction
from behaviorlm.selection import Selection
from behaviorlm.stage_io import (cached_selection_scores, cached_test_rankings, restore_stage, save_run_artifacts,
                                 save_stage)
from behaviorlm.stage_plan import SELECTION_STAGES, STAGE_PLANS, STAGES, TUNING_STAGES
from behaviorlm.stages import (CandidateSoftmaxLoss, a_tuning_set, check_anchors,
                               check_remedies, difficulty_selection, logit_adjustment, random_balanced, role_counts,
                               tail_balanced, tune)
from behaviorlm.tracking import Tracker, tracking
from behaviorlm.training import trainable_state
from behaviorlm.utils import atomic_write_json, kill_point, provenance, seed_everything, shareable

log = logging.getLogger(__name__)


def tokenizer_corpus(dataset: BehaviorDataset, conversations, limit: int = 400) -> list[str]:
    """Texts a tiny in-process tokenizer is trained on: names, rendered prompts and some conversations."""
    texts = list(dataset.vocab.names)
    for sample in dataset.train[:limit]:
        for fmt in ("list", "sentence", "log"):
            texts.append(render_instruction(sample.history, sample.history_times, fmt, (0, 0)))
    texts += [m["content"] for conv in conversations[:50] for m in conv]
    return texts


def build_behavior_model(cfg: DictConfig, dataset: BehaviorDataset, conversations,
                         dist: Dist = LOCAL) -> tuple[BehaviorModel, Any]:
    """Backbone + fresh LoRA adapter + prompts + scorer. Returns it with the folder the backbone came from."""
    device = resolve_device(cfg.device)
    if dist.enabled and dist.accelerator.device.type != "cpu":
        device = dist.accelerator.device  # this rank's GPU
    model, tokenizer, folder = load_backbone(cfg.model, cfg.paths.model_cache_dir, device, seed=cfg.seed,
                                             tokenizer_texts=tokenizer_corpus(dataset, conversations))
    if folder is None:  # built in-process: keep the backbone with the run, before LoRA wraps its modules
        folder = str(Path(cfg.paths.output_dir) / "base_model")
        if dist.is_main:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            shareable(folder)  # safetensors writes 0600
    model = add_lora(model, cfg.model.lora)
    # Prompt formats are drawn per sample with the evaluation seed: a test sample reads the same in every job.
    prompts = PromptBuilder(tokenizer, cfg.prompt.formats, cfg.prompt.use_chat_template, cfg.prompt.system_prompt,
                            seed=cfg.data.eval_seed, include_target_time=cfg.prompt.include_target_time)
    bm = BehaviorModel.build(model, tokenizer, prompts, dataset.vocab, device,
                             autocast_dtype(cfg.model.precision, device), cfg.scoring, dist)
    return bm, folder


def run_stage(cfg: DictConfig, stage: str, bm: BehaviorModel, dataset: BehaviorDataset, conversations,
              selection: Selection | None, tracker: Tracker, scored: tuple | None = None,
              checkpoint_dir: Path | None = None) -> tuple[dict[str, Any], Selection | None]:
    """Run one stage as its declaration says (behaviorlm/stage_plan.py); returns its report and the (possibly new)
    balanced selection."""
    spec = STAGES[stage]
    if spec.picks == "difficulty":
        selection, report = difficulty_selection(bm, dataset.train, cfg.samples_per_behavior, cfg.selection,
                                                 cfg.seed, scored)
        return report, selection
    if spec.picks in ("random", "tail"):
        pick = random_balanced if spec.picks == "random" else tail_balanced
        selection, report = pick(bm, dataset.train, cfg.samples_per_behavior, cfg.seed)
        return report, selection
    report: dict[str, Any] = {}
    objective = None  # the answer tokens' cross-entropy
    stage_cfg = cfg.train[spec.train_section]
    if spec.trains_on == "anchors":
        examples, report = a_tuning_set(bm, dataset.train, conversations, cfg.aux_ratio,
                                        cfg.aux.max_response_tokens, cfg.seed)
        samples = [s for s in dataset.train if s.target in bm.vocab.anchors]
    elif spec.trains_on == "all":
        samples = dataset.train
        examples = bm.behavior_examples(samples)
    else:
        samples = [dataset.train[i] for i in selection.indices]
        examples = bm.behavior_examples(samples)
        if stage_cfg.get("loss") == "balanced_softmax":
            objective = CandidateSoftmaxLoss(bm, logit_adjustment(bm.vocab, [s.target for s in samples], tau=-1.0))
    report.update(role_counts(samples, bm.vocab))

    def on_step(record: dict) -> None:
        tracker.log({f"{stage}/train/step": record["step"], f"{stage}/train/loss": record["loss"],
                     f"{stage}/train/lr": record["lr"]})

    val_for_stopping, records = early_stopping_slice(cfg, dataset), []
    history = tune(bm, examples, stage_cfg, cfg.train, val_for_stopping, cfg.seed, stage, on_step, checkpoint_dir,
                   k=cfg.scoring.top_k, records=records, objective=objective)
    for epoch, record in enumerate(records, start=len(history) - len(records) + 1):  # the validation curve
        tracker.log({f"{stage}/epoch": epoch, **{f"{stage}/val/{name}": value for name, value in record.items()
                                                  if isinstance(value, (int, float))}})
    report.update({"n_examples": len(examples), "epochs": len(history)})
    if history and len(records) == len(history) and len(val_for_stopping) == len(dataset.val):
        # The slice is the whole validation set and the kept adapter is the best epoch's: its metrics are the
        # stage's validation metrics, already scored (a resumed stage lacks earlier epochs' and is scored again).
        scores = [h.val_accuracy for h in history]
        best = scores.index(max(scores))  # the first best epoch: the one train_lora keeps
        report.update({f"val/{name}": value for name, value in records[best].items()})
        report["best_epoch"] = best + 1
    if history:
        report["final_train_loss"] = history[-1].train_loss
        report["train_samples_per_s"] = history[-1].samples_per_s
        report["skipped_steps"] = sum(h.skipped_steps for h in history)  # non-finite loss or gradient
    return report, selection


def early_stopping_slice(cfg: DictConfig, dataset: BehaviorDataset):
    """A seeded random slice of validation (data.eval_seed: the same for every job), not its first rows, which
    are ordered by user."""
    return subsample(dataset.val, cfg.train.val_samples_for_early_stopping, cfg.data.eval_seed)


def run_behaviorlm(cfg: DictConfig, dataset: BehaviorDataset, tracker: Tracker, out: Path,
                   dist: Dist = LOCAL) -> dict[str, Any]:
    """The stages of `stage_order`, then the test set. With several processes every rank runs this function;
    rank 0 alone reads and writes the stage cache and the run folder (the others follow its cache decisions)."""
    conversations = load_conversations(cfg.aux.path, cfg.aux.format) if cfg.aux_ratio > 0 else []
    bm, base_folder = build_behavior_model(cfg, dataset, conversations, dist)
    k = cfg.scoring.top_k
    cache = StageCache(cfg.cache.dir, cfg.cache.enabled)
    key, config = root_cache_key(cfg, dataset, bm.device, conversations), resolved(cfg)
    metrics: dict[str, Any] = {}
    selection, merge_alpha, a_state = None, cfg.train.b_tuning.merge_alpha, None
    for stage in STAGE_PLANS[cfg.stage_order]:
        parent_key, key = key, stage_key(key, stage, config)
        entry = dist.agree(cache.load(stage, key) if dist.is_main else None)
        if entry is not None:
            report, selection = restore_stage(entry, stage, bm, selection)
            report["cache_hit"] = 1
        else:
            started = time.perf_counter()
            scored = None
            if STAGES[stage].picks == "difficulty":
                scored = cached_selection_scores(cfg, config, cache, parent_key, bm, dataset)
            report, selection = run_stage(cfg, stage, bm, dataset, conversations, selection, tracker, scored,
                                          cache.partial_dir(stage, key))
            report["seconds"] = time.perf_counter() - started
            if stage in TUNING_STAGES and dataset.val and "val/acc_overall" not in report:
                val_metrics, _ = bm.evaluate(dataset.val, k, progress=f"validation after {stage}")
                report.update({f"val/{name}": value for name, value in val_metrics.items()})
            kill_point(f"{stage}:trained")
            # Gathered on every rank (FSDP2 shards the adapter too), written by rank 0.
            adapter_state = trainable_state(bm.model, full=True) if stage in TUNING_STAGES else None
            if dist.is_main:
                cache.save(stage, key, partial(save_stage, stage=stage, adapter_state=adapter_state, report=report,
                                               selection=selection))
            dist.barrier()
            kill_point(f"{stage}:cached")
            report["cache_hit"] = 0
        if stage in SELECTION_STAGES and dist.is_main:
            atomic_write_json(out / "selection.json", {"per_behavior": selection.per_behavior,
                                                       "tiers": selection.tier_counts()})
        if STAGES[stage].trains_on == "anchors" and merge_alpha != 1.0:  # the interpolation's A end point
            a_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(bm.model).items()}
        stage_metrics = {f"{stage}/{name}": value for name, value in report.items()}
        metrics.update(stage_metrics)
        # validation metrics were logged per epoch, on the stage's epoch axis; they reach the summary at the end
        tracker.log({name: value for name, value in stage_metrics.items() if f"{stage}/val/" not in name})
        log.info("%s %s: %s", stage, "restored from the stage cache" if report["cache_hit"] else "done",
                 {name: v for name, v in stage_metrics.items() if "acc_overall" in name or "seconds" in name})
    metrics.update({"cache/hits": len(cache.hits), "cache/misses": len(cache.misses)})
    # Behavior examples the model was tuned on (aux conversations excluded): the x-axis of sample efficiency.
    metrics["n_train_examples_used"] = sum(
        metrics.get(f"{stage}/n_examples", 0) - metrics.get(f"{stage}/n_aux_examples", 0) for stage in TUNING_STAGES)

    if a_state is not None:  # test-time remedy: the adapters above are the cached ones whatever alpha is
        interpolate_lora(bm.model, a_state, merge_alpha)
        adopt_as_default(bm.model, "interpolated")
    metrics["test/merge_alpha"] = merge_alpha
    wise_alpha = cfg.scoring.wise_ft_alpha
    if wise_alpha != 1.0:  # test-time remedy, any stage order: the tuned update scaled towards the untuned model
        scale_lora_update(bm.model, wise_alpha)
    metrics["test/wise_ft_alpha"] = wise_alpha
    tau = cfg.scoring.logit_adjustment.tau
    last_tuned = [stage for stage in STAGE_PLANS[cfg.stage_order] if stage in TUNING_STAGES][-1:]
    if tau and last_tuned:
        bm.score_offset = logit_adjustment(bm.vocab, tuned_targets(last_tuned[0], dataset, selection), tau,
                                           cfg.scoring.logit_adjustment.target_prior)
    elif tau:
        log.warning("scoring.logit_adjustment.tau=%s: stage_order=%s tunes nothing, so there is no tuned prior to "
                    "adjust; ranking unadjusted", tau, cfg.stage_order)
    metrics["test/logit_adjustment_tau"] = tau if bm.score_offset is not None else 0.0
    if (a_state is not None or bm.score_offset is not None or wise_alpha != 1.0) and dataset.val:
        # A test-time remedy changes the model the stages validated: its own validation metrics, to choose alpha
        # or tau on (`optimized_metric` defaults to val/acc_overall then), never on the test.
        val_metrics, _ = bm.evaluate(dataset.val, k, progress="validation with the test-time remedy")
        metrics.update({f"val/{name}": value for name, value in val_metrics.items()})
    started = time.perf_counter()
    adapter_state = trainable_state(bm.model, full=True)
    rankings, reused = cached_test_rankings(cfg, cache, bm, dataset, adapter_state, k)
    test_metrics, table, predictions = evaluate_rankings(dataset.test, rankings, bm.vocab, k, dataset.test_weights)
    metrics.update({"test/seconds": time.perf_counter() - started, "cache/evaluation_hit": int(reused)})
    metrics.update({f"test/{name}": value for name, value in test_metrics.items()})
    if dist.is_main:
        write_test_outputs(out, table, predictions)
        tracker.table("test/per_behavior", table)
        save_run_artifacts(cfg, bm, base_folder, out, adapter_state)
        # What `behaviorlm predict` needs, as a W&B model artifact (alias: the stage order, then the seed).
        metrics["wandb/model_artifact"] = tracker.artifact(
            # a model built in-process (tiny_random) travels with its base_model/; real ones are named in the manifest
            "model", [out / "adapter", out / "manifest.json", out / "per_behavior.csv", out / "base_model"],
            aliases=[cfg.stage_order, f"seed{cfg.seed}"])
    return metrics


RUNTIME_MARKERS = ("seconds", "samples_per_s", "cache", "memory", "wandb/")


def split_runtime(metrics: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(results, runtime facts): timings and cache hits go to run_info.json, so metrics.json of the same command
    is identical run after run."""
    runtime = {k: v for k, v in metrics.items() if any(m in k for m in RUNTIME_MARKERS)}
    return {k: v for k, v in metrics.items() if k not in runtime}, runtime


# Config keys that name files or folders: made absolute against the user's working directory before anything
# else, so that torchrun/accelerate workers (started in the project root) and a later `cd` read the same files.
PATH_KEYS = ("data.path", "data.train_path", "data.test_path", "data.taxonomy_path", "aux.path", "model.path",
             "cache.dir", "paths.output_dir", "paths.model_cache_dir", "paths.data_dir")


def absolute_paths(cfg: DictConfig) -> None:
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            OmegaConf.update(cfg, key, str(Path.cwd() / value), merge=False)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment job; returns the flat metrics written to `<output_dir>/metrics.json` (results) and
    `run_info.json` (timings, cache hits). A failing job writes `{"status": "failed", "error": ...}` instead."""
    absolute_paths(cfg)
    validate_config(cfg)
    check_remedies(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        finished = reusable_result(cfg, out)
        if finished is not None:
            return finished
        if cfg.launcher.name != "local":  # this Hydra job becomes the launcher of torchrun/accelerate workers
            from behaviorlm.launch import launch_workers

            return launch_workers(cfg, out, variant=hydra_choice("variant") or "full")
        return run_job(cfg, out, variant=hydra_choice("variant") or "full")
    except Exception as err:
        write_failure(cfg, out, err)
        raise


def reusable_result(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """The job folder's completed metrics.json when it was made under this job's key (same config but for paths and
    logging, same samples, device and code): a rerun of an interrupted sweep runs only the jobs it lacks."""
    from behaviorlm.sweeps import REUSED

    metrics_path, info_path = out / "metrics.json", out / "run_info.json"
    if not (metrics_path.is_file() and info_path.is_file()):
        return None
    metrics, info = json.loads(metrics_path.read_text()), json.loads(info_path.read_text())
    if metrics.get("status") != "completed" or not info.get("job_key"):
        return None
    if info["job_key"] != job_key(cfg, load_dataset(cfg), resolve_device(cfg.device)):
        log.info("%s holds a result of another config, data or code version: running the job again", out)
        return None
    REUSED.add(str(out.resolve()))
    log.info("reused %s: completed before with the same config, data and code (a fresh folder runs it again)",
             metrics_path)
    return metrics


def write_failure(cfg: DictConfig, out: Path, err: BaseException) -> None:
    atomic_write_json(out / "metrics.json", {"status": "failed", "error": f"{type(err).__name__}: {err}",
                                             "method": cfg.method, "stage_order": cfg.stage_order})


def run_job(cfg: DictConfig, out: Path, variant: str, dist: Dist = LOCAL) -> dict[str, Any]:
    """The job itself, in this process (launcher=local) or in each torchrun/accelerate worker (rank 0 writes)."""
    seed_everything(cfg.seed)
    started = time.perf_counter()
    dataset = load_dataset(cfg)
    device = resolve_device(cfg.device)
    vocab = dataset.vocab
    if cfg.method == "behaviorlm":
        check_anchors(cfg.stage_order, vocab)
    job_type = cfg.stage_order if cfg.method == "behaviorlm" else cfg.method
    with tracking(cfg, job_type=job_type) if dist.is_main else contextlib.nullcontext(Tracker()) as tracker:
        # inside the W&B run: a corpus that cannot be read (it enters the key) fails the run where the dashboard
        # shows it, as the stage that reads it would
        key = job_key(cfg, dataset, device)
        if cfg.method == "behaviorlm":
            metrics = run_behaviorlm(cfg, dataset, tracker, out, dist)
        else:
            from behaviorlm.baselines import run_baseline

            metrics = run_baseline(cfg, dataset, out)
            tracker.table("test/per_behavior", pd.read_csv(out / "per_behavior.csv"))
        metrics.update({
            "method": cfg.method, "stage_order": cfg.stage_order, "model": cfg.model.name, "data": cfg.data.name,
            "seed": cfg.seed, "aux_ratio": cfg.aux_ratio, "anchor_threshold": cfg.anchor_threshold,
            "samples_per_behavior": cfg.samples_per_behavior, "max_train_per_behavior": cfg.data.max_train_per_behavior,
            "n_train": len(dataset.train), "n_val": len(dataset.val), "n_test": len(dataset.test),
            "n_anchor_behaviors": len(vocab.anchors), "n_tail_behaviors": len(vocab.tail),
            "n_behaviors": len(vocab.names), "seconds_total": time.perf_counter() - started, "status": "completed",
            "variant": variant, "n_processes": dist.world, "engine": dist.engine,
            "eval_seed": cfg.data.eval_seed, "test_sampling": cfg.data.test_sampling,
            "include_target_time": cfg.prompt.include_target_time, "lora_dropout": cfg.model.lora.dropout,
            # the sequence baselines train in fp32 whatever model.precision says
            "device_type": device.type, "compute_dtype": compute_dtype(cfg.model.precision, device)
            if cfg.method == "behaviorlm" else "float32",
        })
        if torch.cuda.is_available():
            metrics["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        tracker.summary(metrics)
        metrics.update(tracker.where())
    if not dist.is_main:
        return metrics
    results, runtime = split_runtime(metrics)
    atomic_write_json(out / "metrics.json", results)
    # after metrics.json: a job stopped between the two leaves no key that would vouch for an older result
    atomic_write_json(out / "run_info.json", {**runtime, **provenance(), "job_key": key})
    name = f"behaviorlm / {cfg.stage_order} / {cfg.model.name}" if cfg.method == "behaviorlm" else cfg.method
    print(f"\n{name} on {cfg.data.name} "
          f"(test: {len(dataset.test)} samples, {runtime['seconds_total']:.0f} s)\n{format_results_table(metrics)}\n"
          f"metrics: {out / 'metrics.json'}")
    return metrics


def tuned_targets(stage: str, dataset: BehaviorDataset, selection: Selection | None) -> list[str]:
    """The behavior targets a tuning stage trained on (aux conversations aside): its prior, for logit adjustment."""
    trains_on = STAGES[stage].trains_on
    if trains_on == "anchors":
        return [s.target for s in dataset.train if s.target in dataset.vocab.anchors]
    if trains_on == "selection":
        return [dataset.train[i].target for i in selection.indices]
    return [s.target for s in dataset.train]


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float:
    """What a sweeper optimises: `optimized_metric`, or the last tuning stage's validation accuracy (validate_config
    refuses a test metric: tuning on it would leave no held-out estimate)."""
    key = cfg.optimized_metric
    if key is None and "val/acc_overall" in metrics:  # the final model after a test-time remedy
        key = "val/acc_overall"
    if key is None:
        stages = [s for s in STAGE_PLANS.get(cfg.stage_order, ()) if f"{s}/val/acc_overall" in metrics]
        key = f"{stages[-1]}/val/acc_overall" if stages else None
    if key is None:  # nothing validated (zero_shot, a sequence model): only a sweeper that optimises would care
        return float("nan")
    value = metrics.get(key)
    if value is None:
        log.warning("optimized_metric %s is not in this job's metrics: returning NaN to the sweeper", key)
        return float("nan")
    return float(value)


def hydra_choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra job (None outside Hydra or when unset)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:
        return None
