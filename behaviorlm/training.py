"""LoRA fine-tuning loop (one function, read top to bottom).

Why our own loop rather than HF Trainer: the loss is on answer tokens only and the answer always ends the
sequence, so with left padding every answer sits in the last columns and the model computes vocabulary logits for
just those columns (`logits_to_keep`) — the 49k-way LM head over the whole prompt is most of a small model's
training cost. Batches are grouped by length to avoid padding, early stopping scores real validation accuracy
with the candidate scorer, and each epoch (and every `checkpoint_interval_s` inside one) leaves a checkpoint to
resume from. None of this needs Trainer's machinery, and a loop this size is easy to audit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from behaviorlm.distributed import LOCAL, Dist
from behaviorlm.models import (CompiledLayers, attention_implementation, autocast, compile_unavailable,
                               training_attention)
from behaviorlm.utils import atomic_write, kill_point

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainExample:
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]
    kind: str = "behavior"  # behavior | aux

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                           group_factor: int = 32) -> list[list[int]]:
    """Shuffle, sort within large random groups by length, cut into batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches = []
    group = batch_size * group_factor
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=lambda i: lengths[i])
        batches.extend([list(chunk[j:j + batch_size]) for j in range(0, len(chunk), batch_size)])
    return [batches[i] for i in rng.permutation(len(batches))]


def collate(examples: Sequence[TrainExample], pad_id: int, device: torch.device):
    """Left-pad so all answers end in the last column; labels cover only the last `answer_width` columns."""
    width = max(len(e) for e in examples)
    answer_width = max(len(e.answer_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), answer_width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        sequence = list(example.prompt_ids) + list(example.answer_ids)
        ids[row, width - len(sequence):] = torch.tensor(sequence)
        attention[row, width - len(sequence):] = 1
        labels[row, answer_width - len(example.answer_ids):] = torch.tensor(example.answer_ids)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), attention.to(device), positions.to(device), labels.to(device)


def answer_loss_sum(model, batch, amp_dtype, device) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens, computing logits only where answers are predicted."""
    ids, attention, positions, labels = batch
    answer_width = labels.shape[1]
    with autocast(device, amp_dtype):
        # Column c predicts token c+1: keep the answer_width columns before the last one, plus it.
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions,
                       logits_to_keep=answer_width + 1, use_cache=False).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, int((labels != -100).sum())


class AnswerTokenLoss:
    """The default objective: cross-entropy over the answer's tokens, normalised per answer token."""

    def __init__(self, pad_id: int, device: torch.device, amp_dtype: Optional[torch.dtype],
                 attn_implementation: Optional[str] = None):
        self.pad_id, self.device, self.amp_dtype = pad_id, device, amp_dtype
        self.attn_implementation = attn_implementation  # None: the model's own kernel

    def batch(self, examples: Sequence[TrainExample]):
        return collate(examples, self.pad_id, self.device)

    def count(self, batch) -> int:
        return int((batch[3] != -100).sum())

    def width(self, batch) -> int:
        return int(batch[0].shape[1])

    def loss_sum(self, model, batch) -> torch.Tensor:
        # a plain padding mask: any attention kernel computes the same (the trie masks of scoring need SDPA)
        with attention_implementation(model, self.attn_implementation):
            return answer_loss_sum(model, batch, self.amp_dtype, self.device)[0]


class NonFiniteTrainingError(RuntimeError):
    """Too many optimizer steps had a non-finite loss or gradient: the adapter would be garbage."""


# A step whose gradient norm is NaN/inf is skipped: one bad batch (a bf16 overflow on a GPU) must not turn every weight
# into NaN, which would then score every answer alike and let selection and the test run on garbage. More than this
# share of skipped steps in an epoch stops the stage with an error instead.
MAX_SKIPPED_STEP_SHARE = 0.01

# train.compile=auto compiles a stage's decoder layers from this many optimizer steps on: on a 2-core CPU the
# compiled SmolLM2 step saves 0.17-0.21 s (results/train_step/compile.log), and compiling costs 8 s with a warm
# inductor cache (every job after a machine's first) and 40 s cold: 100 steps gain about 10 s warm, lose 20 s cold.
COMPILE_MIN_STEPS = 100


def layer_compilation(setting: str, model, device: torch.device, total_steps: int, dist: Dist,
                      desc: str, amp_dtype: Optional[torch.dtype] = torch.bfloat16) -> Optional[CompiledLayers]:
    """train.compile (auto | always | never) -> the stage's compiled decoder layers, or None to train eagerly.

    auto compiles long CPU stages under bf16 autocast, where fusing the casts and element-wise passes paid 1.25x;
    an fp32 step (a CPU without native bf16) is no faster compiled and pays 89 s of compilation (docs/speed.md)."""
    if setting == "never":
        return None
    reason = compile_unavailable(device)
    if reason is None and dist.sharded:
        reason = "FSDP/DeepSpeed shard the layers (their compiled training was never measured here)"
    if setting == "always" and reason is not None:
        raise ValueError(f"train.compile=always: {reason}; set train.compile=auto or never")
    if reason is None and setting == "auto":
        if device.type != "cpu":  # compiled layers are measured on CPUs only (docs/gpu.md has the whole model's)
            reason = "measured on CPUs only so far; train.compile=always compiles on this device too"
        elif total_steps < COMPILE_MIN_STEPS:
            reason = f"{total_steps} steps < {COMPILE_MIN_STEPS}"
        elif amp_dtype is None:
            reason = "fp32 training: compiled layers were no faster in fp32"
    if reason is not None:
        log.info("%s: training eagerly (train.compile=%s: %s)", desc, setting, reason)
        return None
    log.info("%s: compiling the decoder layers (train.compile=%s, %d steps)", desc, setting, total_steps)
    return CompiledLayers(model)


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val_accuracy: Optional[float]
    samples_per_s: float
    seconds: float
    skipped_steps: int = 0  # optimizer steps skipped for a non-finite loss or gradient


def train_lora(model, examples: Sequence[TrainExample], train_cfg, stage_cfg, *, pad_id: int, device: torch.device,
               amp_dtype: Optional[torch.dtype], validate: Optional[Callable[[], float]] = None, seed: int = 0,
               desc: str = "train", on_step: Optional[Callable[[dict], None]] = None,
               checkpoint_dir: Optional[Path] = None, dist: Dist = LOCAL, objective=None) -> list[EpochResult]:
    """Train the model's trainable (LoRA) parameters; with `validate`, keep the best epoch's weights.

    `train_cfg` is the config's `train` section (batch size, accumulation, AdamW's decay, warm-up, clipping, the
    attention kernel, compilation, a step cap), `stage_cfg` the stage's own (`train.a_tuning`, `train.b_tuning`:
    epochs, learning rate, early-stopping patience); any objects with those attributes will do.

    `train_cfg.batch_size` is the global batch. With several processes (`dist`) every rank draws the same global
    batches and trains on its strided slice of each; the loss is normalised by the global answer-token count, so N
    processes take the same steps as one (up to float reduction order). `objective` (batch / count / width /
    loss_sum) defaults to the answer tokens' cross-entropy, its forward attending with `train_cfg.attn_implementation`;
    `stages.CandidateSoftmaxLoss` is the balanced-softmax one. `train_cfg.compile` (`layer_compilation`): the
    batches run through compiled decoder layers, validation between epochs eagerly.

    With `checkpoint_dir`, each epoch's end leaves a checkpoint, and so does the first optimizer step after every
    `train_cfg.checkpoint_interval_s` seconds inside an epoch (null: epoch ends only; 0: every step): a killed run
    resumes from the last one and ends exactly as an uninterrupted run would.
    """
    max_epochs, learning_rate, patience = stage_cfg.max_epochs, stage_cfg.learning_rate, stage_cfg.patience
    batch_size, grad_accum = train_cfg.batch_size, train_cfg.grad_accum
    max_steps_per_epoch = train_cfg.max_steps_per_epoch
    checkpoint_interval_s = train_cfg.checkpoint_interval_s
    objective = objective or AnswerTokenLoss(pad_id, device, amp_dtype,
                                             training_attention(train_cfg.attn_implementation, device))
    if not examples:
        log.warning("%s: no training examples; skipping the stage", desc)
        return []
    rng = np.random.default_rng(seed)  # the same on every rank: all ranks cut the same global batches
    torch.manual_seed(seed + dist.rank)  # per rank: LoRA dropout masks must differ between ranks
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=train_cfg.weight_decay)
    if dist.sharded and checkpoint_dir is not None:
        log.info("%s: no epoch checkpoints under FSDP/DeepSpeed (sharded states); a killed job redoes the stage", desc)
        checkpoint_dir = None
    train_model = model
    if dist.enabled:  # DDP / FSDP / DeepSpeed, as the accelerate launch config says
        train_model, optimizer = dist.accelerator.prepare(model, optimizer)
    lengths = [len(e) for e in examples]
    batches_per_epoch = math.ceil(len(examples) / batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    if max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, max_steps_per_epoch)
    total_steps = max(1, steps_per_epoch * max_epochs)
    warmup = int(total_steps * train_cfg.warmup_ratio)
    def lr_factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return warm * max(0.0, 1.0 - step / total_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    compiled = layer_compilation(train_cfg.compile, model, device, total_steps, dist, desc, amp_dtype)
    compiled_forward = compiled.active if compiled is not None else contextlib.nullcontext

    history: list[EpochResult] = []
    best_accuracy, best_state, stale, step, first_epoch, stopped = -1.0, None, 0, 0, 1, False
    unfinished_epoch = None  # a mid-epoch checkpoint's place in its epoch and the epoch's running totals
    resumed = latest_checkpoint(checkpoint_dir)
    if resumed is not None:
        # Everything the remaining epochs depend on, so that a resumed run ends exactly as an uninterrupted one.
        model.load_state_dict(resumed["trainable"], strict=False)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        rng.bit_generator.state = resumed["numpy_rng"]
        torch.set_rng_state(resumed["torch_rng"])
        history = [EpochResult(**h) for h in resumed["history"]]
        best_accuracy, best_state, stale, step = (resumed["best_accuracy"], resumed["best_state"], resumed["stale"],
                                                  resumed["step"])
        first_epoch, stopped = resumed["epoch"] + 1, resumed["stopped"]
        unfinished_epoch = resumed.get("unfinished_epoch")
        if unfinished_epoch is None:
            log.info("%s: resuming after epoch %d from %s", desc, resumed["epoch"], checkpoint_dir)
        else:
            log.info("%s: resuming in epoch %d after batch %d of %d from %s", desc, first_epoch,
                     unfinished_epoch["next_batch"], unfinished_epoch["batches"], checkpoint_dir)

    def resume_state() -> dict:
        """Everything the rest of the stage depends on, so that a resumed run ends exactly as an uninterrupted one."""
        return {"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "history": [vars(h) for h in history],
                "best_accuracy": best_accuracy, "best_state": best_state, "stale": stale, "step": step,
                "stopped": stopped}

    last_checkpoint = time.perf_counter()
    for epoch in range(first_epoch, max_epochs + 1):
        if stopped:
            break
        train_model.train()
        if unfinished_epoch is not None:
            # The epoch's batches drawn again from the generator's state at the epoch's start, those already trained
            # skipped: the generator ends where the uninterrupted epoch left it.
            rng.bit_generator.state = unfinished_epoch["epoch_start_rng"]
            seen, loss_total, token_total, skipped = (unfinished_epoch[name] for name in
                                                      ("seen", "loss_total", "token_total", "skipped"))
            first_batch, started = unfinished_epoch["next_batch"], time.perf_counter() - unfinished_epoch["seconds"]
            unfinished_epoch = None
        else:
            started, seen, loss_total, token_total, skipped, first_batch = time.perf_counter(), 0, 0.0, 0, 0, 0
        epoch_start_rng = rng.bit_generator.state
        batches = length_grouped_batches(lengths, batch_size, rng)[:steps_per_epoch * grad_accum]
        bar = tqdm(total=len(batches), initial=first_batch, desc=f"{desc} epoch {epoch}/{max_epochs}",
                   unit="batch", leave=False, mininterval=2.0, disable=not dist.is_main)
        for group_start in range(first_batch, len(batches), grad_accum):
            group = batches[group_start:group_start + grad_accum]
            collated, weights = [], []
            for global_batch in group:
                mine = global_batch[dist.rank::dist.world]
                # A rank whose slice of a short last batch is empty still runs a zero-weight forward: DDP needs
                # every rank in every gradient all-reduce.
                collated.append(objective.batch([examples[i] for i in (mine or global_batch[:1])]))
                weights.append(1.0 if mine else 0.0)
            # Normalise by the tokens of the whole accumulation group on all ranks: accumulation then equals one
            # big batch, and N processes equal one (DDP averages gradients, hence the factor world).
            local_tokens = sum(objective.count(c) * w for c, w in zip(collated, weights))
            group_tokens = dist.sum(local_tokens)
            group_loss = 0.0
            for j, (batch, weight) in enumerate(zip(collated, weights)):
                with dist.no_sync(train_model, skip=j < len(collated) - 1), compiled_forward():
                    loss_sum = objective.loss_sum(train_model, batch)  # compiled (if so); validation stays eager
                    scaled = loss_sum * weight * dist.world / group_tokens
                    dist.accelerator.backward(scaled) if dist.enabled else scaled.backward()
                group_loss += loss_sum.item() * weight
                seen += len(batch[0]) * int(weight)
                bar.update(1)
            if dist.enabled:
                grad_norm = dist.accelerator.clip_grad_norm_(train_model.parameters(), train_cfg.max_grad_norm)
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, train_cfg.max_grad_norm)
            # The norm is taken after the all-reduce, so every rank makes the same decision.
            if torch.isfinite(torch.as_tensor(grad_norm)):
                loss_total += dist.sum(group_loss)
                token_total += group_tokens
                optimizer.step()
            else:
                skipped += 1
                widths = [objective.width(c) for c in collated]
                log.warning("%s epoch %d step %d: non-finite loss or gradient (loss sum %s over %d answer tokens, "
                            "row widths %s): step skipped", desc, epoch, step + 1, group_loss, group_tokens, widths)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            rate = seen / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{loss_total / max(1, token_total):.3f}", samples_s=f"{rate:.1f}", refresh=False)
            if on_step is not None:
                on_step({"step": step, "loss": loss_total / max(1, token_total), "lr": scheduler.get_last_lr()[0]})
            next_batch = group_start + grad_accum
            if (checkpoint_dir is not None and checkpoint_interval_s is not None and next_batch < len(batches)
                    and time.perf_counter() - last_checkpoint >= checkpoint_interval_s):
                if dist.is_main:
                    save_checkpoint(checkpoint_dir, {"epoch": epoch - 1, **resume_state(), "unfinished_epoch": {
                        "epoch_start_rng": epoch_start_rng, "next_batch": next_batch, "batches": len(batches),
                        "seen": seen, "loss_total": loss_total, "token_total": token_total, "skipped": skipped,
                        "seconds": time.perf_counter() - started}})
                last_checkpoint = time.perf_counter()
                kill_point(f"{desc}:epoch_{epoch}_batch_{next_batch}")
        bar.close()
        if skipped > max(1, MAX_SKIPPED_STEP_SHARE * len(batches) / grad_accum):
            raise NonFiniteTrainingError(
                f"{desc} epoch {epoch}: {skipped} of {math.ceil(len(batches) / grad_accum)} steps had a non-finite "
                f"loss or gradient (model weights {next(model.parameters()).dtype} on {device.type}); try "
                "model.precision=mixed (fp32 weights), fp32 or a lower learning rate")
        seconds = time.perf_counter() - started
        seen = int(dist.sum(seen))
        accuracy = validate() if validate is not None else None
        result = EpochResult(epoch, loss_total / max(1, token_total), accuracy, seen / max(seconds, 1e-9), seconds,
                             skipped)
        history.append(result)
        log.info("%s epoch %d: loss %.4f, val acc %s, %.1f samples/s", desc, epoch, result.train_loss,
                 "n/a" if accuracy is None else f"{accuracy:.4f}", result.samples_per_s)
        if accuracy is not None:
            if accuracy > best_accuracy:
                best_accuracy, stale = accuracy, 0
                best_state = {k: v.detach().clone() for k, v in trainable_state(model).items()}
            else:
                stale += 1
                stopped = stale >= patience
                if stopped:
                    log.info("%s: early stop after epoch %d (best val acc %.4f)", desc, epoch, best_accuracy)
        if checkpoint_dir is not None and dist.is_main:
            save_checkpoint(checkpoint_dir, {"epoch": epoch, **resume_state()})
        last_checkpoint = time.perf_counter()
        kill_point(f"{desc}:epoch_{epoch}")
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return history


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write epoch_N.pt (N: the epochs completed; a mid-epoch checkpoint replaces its epoch's start) atomically,
    then drop older ones: a kill at any moment leaves one whole checkpoint. Two jobs of a parallel sweep that train
    the same stage (one cache key, one checkpoint folder) write the same checkpoints, each through its own temporary
    file (with one name for both, one renamed it from under the other's write)."""
    path = folder / f"epoch_{state['epoch']}.pt"
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    for old in folder.glob("epoch_*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def latest_checkpoint(folder: Optional[Path]) -> Optional[dict]:
    if folder is None:
        return None
    for _ in range(3):  # another job training the same stage may replace the newest between the glob and the load
        found = sorted(folder.glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if not found:
            return None
        try:
            return torch.load(found[-1], weights_only=False)
        except FileNotFoundError:
            continue
    return None


def trainable_state(model, full: bool = False) -> dict[str, torch.Tensor]:
    """The LoRA weights. `full=True` gathers FSDP2-sharded ones (a collective: every rank must call it)."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {k: v for k, v in model.state_dict().items() if k in names}
    if full:
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    return state


