"""The stage-cache keys, derived from what each stage reads (declared in behaviorlm/stage_plan.py).

Safe by default: a stage's key holds the WHOLE resolved config except the paths declared irrelevant (globally, or
for that stage, each with the reason), plus the facts the config does not show (the exact samples, anchors,
categories, conversations, device and the code of every package module the pipeline imports). A new config key
therefore invalidates every stage until someone declares, with a reason, that a stage does not read it.
`tests/test_cache_keys.py` mutates every leaf of the default config one at a time and checks exactly this.

Keys chain: a stage's key includes its parent's, so whatever changes upstream invalidates everything below.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from behaviorlm.cache import digest
from behaviorlm.data.conversations import load_conversations
from behaviorlm.stage_plan import STAGES

# Read by no stage: where things go, how they are logged, and settings only the test or the baselines use.
GLOBAL_IGNORES: dict[str, str] = {
    "paths": "where files go; the data and models they point to enter the key by content or by model.*",
    "logger": "W&B logging only",
    "cache": "where the cache lives",
    "launcher": "N processes take the same optimizer steps as one (the loss is normalised globally; DDP averages)",
    "task_name": "a label for the output folder",
    "optimized_metric": "what a sweeper reads after the job",
    "extras": "printing and logging conveniences",
    "device": "the resolved device type enters the key as a fact ('auto' and 'cpu' can be the same device)",
    "method": "only method=behaviorlm runs stages",
    "baselines": "the sequence baselines train outside the stage cache",
    "stage_order": "a stage's inputs are chained through its parent's key: the plan around it does not change "
                   "what it computes (anchor_only and progressive share A-Tuning)",
    "model.pip_install": "how to install the model, not which model it is",
    "data.path": "the log enters the key by content (the samples digest)",
    "data.train_path": "the log enters the key by content (the samples digest)",
    "data.test_path": "the log enters the key by content (the samples digest)",
    "data.taxonomy_path": "the taxonomy enters the key by content (the categories digest)",
    "aux.path": "the conversations enter the key by content (the conversations digest)",
    "data.max_test_samples": "the test set is scored after the stages and never cached",
    "data.test_sampling": "the test set is scored after the stages and never cached",
    "scoring.logit_adjustment": "test-time re-ranking after the stages",
    "train.b_tuning.merge_alpha": "test-time adapter interpolation after the stages",
    "scoring.wise_ft_alpha": "test-time scaling of the tuned update after the stages",
    "train.checkpoint_interval_s": "when a checkpoint is written; a resumed stage ends as an uninterrupted one",
}

CACHE_VERSION = 2  # bump when an entry's layout changes


def package_modules(roots: tuple[str, ...] = ("pipeline.py",)) -> list[str]:
    """The package's modules that `roots` import, directly or not (any `behaviorlm.*` import in the source,
    inside functions too), as paths relative to the package: the code that can change a stage's output."""
    package = Path(__file__).resolve().parent
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or not (package / name).is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((package / name).read_text(encoding="utf-8"))):
            targets = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for target in targets:
                if target.startswith("behaviorlm."):
                    parts = target.split(".")[1:]
                    todo += [str(Path(*parts)) + ".py", str(Path(*parts, "__init__.py"))]
    return sorted(seen)


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """The pipeline's modules by content, read once per process (about 0.1 s; a job's stage, job and evaluation keys
    all need it, and the code a process runs is the code it imported)."""
    package = Path(__file__).resolve().parent
    return digest([(name, (package / name).read_text(encoding="utf-8")) for name in package_modules()])


def samples_content(samples) -> str:
    """Which samples, by content and in order: user, target time, history and target of each."""
    return digest([(s.user, str(s.time), s.history, s.target) for s in samples])


def without(config: Any, ignores: Mapping[str, str], prefix: str = "") -> Any:
    """`config` (a resolved container) with the dotted paths in `ignores` removed."""
    if not isinstance(config, dict):
        return config
    return {key: without(value, ignores, f"{prefix}{key}.") for key, value in config.items()
            if f"{prefix}{key}" not in ignores}


def stage_config(config: dict, stage: str) -> dict:
    """The part of the resolved config `stage` reads."""
    return without(config, {**GLOBAL_IGNORES, **STAGES[stage].ignores})


def stage_key(parent_key: str, stage: str, config: dict) -> str:
    return digest({"parent": parent_key, "stage": stage, "config": stage_config(config, stage),
                   "version": CACHE_VERSION})


def resolved(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


# What a finished job's result does not depend on: where it went, how it was logged, and where its input files lie
# (they enter job_key by content: a sweep run again from a clone in another folder reuses its finished jobs). A job
# folder that holds a completed result under the same key is reused by a rerun of its sweep
# (pipeline.reusable_result).
INPUT_FILE_KEYS = ("data.path", "data.train_path", "data.test_path", "data.taxonomy_path", "aux.path")
JOB_IGNORES: dict[str, str] = {key: GLOBAL_IGNORES[key] for key in
                               ("paths", "logger", "cache", "task_name", "optimized_metric", "extras",
                                *INPUT_FILE_KEYS)}


def computed_precision(cfg: DictConfig, device: torch.device) -> str:
    """What the forward computes in on this machine: `model.precision=auto` is bf16 autocast on a CPU with native
    bf16 and plain fp32 on one without (models.autocast_dtype), so the same config gives other numbers on a Zen 3
    than on a Zen 4; a cache or a finished job made on one kind is not taken for the other's."""
    from behaviorlm.models import autocast_dtype

    return str(autocast_dtype(cfg.model.precision, device))


def job_key(cfg: DictConfig, dataset, device: torch.device) -> str:
    """A whole job's result: its config (all of it but JOB_IGNORES), every sample it trains, validates and tests on,
    the categories contrastive selection reads, the conversations mixed in (as root_cache_key has them), the device
    type and the code. Equal keys give identical metrics.json files (the pipeline is deterministic on one machine)."""
    return digest({"config": without(resolved(cfg), JOB_IGNORES),
                   "samples": samples_content(dataset.train + dataset.val + dataset.test),
                   "categories": digest(sorted(dataset.vocab.categories.items())),
                   "conversations": digest(load_conversations(cfg.aux.path, cfg.aux.format)) if cfg.aux_ratio > 0
                   else None,
                   "device": device.type, "precision": computed_precision(cfg, device), "code": code_fingerprint(),
                   "version": CACHE_VERSION})


def root_cache_key(cfg: DictConfig, dataset, device: torch.device, conversations=()) -> str:
    """The facts every stage depends on that the config does not show: the exact samples (train and validation),
    the anchors and categories they imply, the conversations mixed in, the device type and the code."""
    return digest({"samples": samples_content(dataset.train + dataset.val), "anchors": sorted(dataset.vocab.anchors),
                   # contrastive selection reads each behavior's category (data.columns.category, the taxonomy)
                   "categories": digest(sorted(dataset.vocab.categories.items())),
                   "conversations": digest(list(conversations)) if cfg.aux_ratio > 0 else None,
                   "device": device.type, "precision": computed_precision(cfg, device), "code": code_fingerprint()})


# What ranking the test set reads, for the evaluation cache (the `evaluation` entries beside the stages'): the base
# model and how it is loaded, the prompts and the seed their formats are drawn with, every scoring setting and the
# device; the rest enters by content: the adapter as it stands after the test-time remedies (an untuned one, all
# lora_B zero, is the same function whatever its random lora_A: every seed's zero-shot job shares one entry), the
# test samples, the behavior names in ranking order, the logit-adjustment offset and the code; and a backbone built
# in-process, which the config does not name, by content.
EVALUATION_READS = ("model", "prompt", "scoring", "data.eval_seed", "device")
EVALUATION = "evaluation"


def tensors_digest(state: Mapping[str, torch.Tensor], prefix: bytes = b"") -> str:
    """Named tensors by content, in name order, after `prefix`: 20 hex digits."""
    import hashlib

    h = hashlib.sha256(prefix)
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def adapter_digest(adapter_state: Mapping[str, torch.Tensor]) -> str:
    """The adapter's weights by content; `untuned` when every lora_B is zero (the adapter changes nothing)."""
    if all(not bool(tensor.any()) for name, tensor in adapter_state.items() if "lora_B" in name):
        return "untuned"
    return tensors_digest(adapter_state)


def backbone_content(cfg: DictConfig, model, tokenizer) -> str | None:
    """A backbone built in-process (`model.source=tiny_random`) by content, base weights and tokenizer: its weights
    are drawn with the run's seed and its tokenizer is trained on the run's texts, so its config does not name it,
    and two seeds' untuned models differ. None for a pretrained backbone, which `model` names."""
    import json

    if cfg.model.source != "tiny_random":
        return None
    # FSDP2-sharded weights are gathered (a collective, which every rank reaches in this order)
    base = {name: tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            for name, tensor in sorted(model.state_dict().items()) if "lora_" not in name}
    return tensors_digest(base, prefix=json.dumps(sorted(tokenizer.get_vocab().items())).encode())


def evaluation_key(cfg: DictConfig, adapter_state: Mapping[str, torch.Tensor], test_samples, names,
                   score_offset, device: torch.device, backbone: str | None = None) -> str:
    """Two jobs with equal keys rank the test set identically, so the second reuses the first's rankings.
    `backbone`: `backbone_content` of a backbone the config does not name."""
    reads = {path: OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value
             for path in EVALUATION_READS for value in [OmegaConf.select(cfg, path)]}
    key = {"config": reads,
           "adapter": adapter_digest(adapter_state),
           "test": samples_content(test_samples),
           "names": digest(list(names)), "device": device.type,
           "precision": computed_precision(cfg, device), "code": code_fingerprint(),
           "offset": None if score_offset is None else digest([round(float(x), 9) for x in score_offset]),
           "version": CACHE_VERSION}
    if backbone is not None:  # (absent otherwise: the keys of pretrained backbones stay what they were)
        key["backbone"] = backbone
    return digest(key)
