"""The training half of `make bench` (tools/bench/bench.py): the batches it times, the dropout switch, where a
step's time goes, and the step against TRL's SFTTrainer on the same batches."""

from __future__ import annotations

import contextlib
import importlib.util
import time

import numpy as np
import torch

from behaviorlm.training import AnswerTokenLoss, collate, length_grouped_batches, trainable_state


def grouped_train_batches(bm, train_samples, batch_size: int, steps: int) -> tuple[list, list]:
    """`steps` collated batches of real training examples, grouped by length as the training loop groups them
    (padding < 1%; consecutive examples would pad 8.5%), and the examples they hold."""
    pool = bm.behavior_examples(train_samples[:batch_size * 32])
    groups = length_grouped_batches([len(e) for e in pool], batch_size, np.random.default_rng(0))[:steps]
    batches = [collate([pool[i] for i in group], bm.tokenizer.pad_token_id, bm.device) for group in groups]
    return [pool[i] for group in groups for i in group], batches


@contextlib.contextmanager
def without_lora_dropout(model):
    """LoRA's dropout off inside the block (peft's per-module dropouts swapped for identities, then put back)."""
    swapped = []
    for module in model.modules():
        if isinstance(getattr(module, "lora_dropout", None), torch.nn.ModuleDict):
            for name, dropout in module.lora_dropout.items():
                swapped.append((module.lora_dropout, name, dropout))
                module.lora_dropout[name] = torch.nn.Identity()
    try:
        yield
    finally:
        for modules, name, dropout in swapped:
            modules[name] = dropout


def step_gemm_shapes(model, batches) -> list[tuple[int, int, int]]:
    """The (M, K, N) of the linear layers a training step multiplies through: M the tokens of a batch as the step
    pads it (its median batch), K x N each projection of one decoder layer (attention q, k, v, o and the MLP's
    gate, up, down), as many times as the model has layers. The FLOPs the step is credited with (4 x parameters
    x tokens) are these layers' forward and backward-through-activation GEMMs."""
    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    m = int(np.median([batch[0].numel() for batch in batches]))
    layer = [(hidden, config.num_attention_heads * head_dim), (hidden, kv), (hidden, kv),
             (config.num_attention_heads * head_dim, hidden), (hidden, inter), (hidden, inter), (inter, hidden)]
    return [(m, k, n) for k, n in layer] * config.num_hidden_layers


def step_shape_peak(dtype: torch.dtype, shapes: list[tuple[int, int, int]], repeat: int = 10) -> float:
    """FLOP/s of the step's own GEMMs in `dtype`: for every (M, K, N), the forward x @ W^T as F.linear runs it and
    the backward grad @ W, each timed over `repeat` calls after a warm-up; the total FLOPs over the total time. The
    ceiling a step of these shapes could reach, beside the 2048^3 peak (`train_flop_fraction_of_step_shapes`)."""
    timings: dict[tuple[int, int, int], float] = {}
    for shape in set(shapes):
        m, k, n = shape
        x, w, grad = (torch.randn(*size, dtype=dtype) for size in ((m, k), (n, k), (m, n)))
        calls = (lambda: torch.nn.functional.linear(x, w), lambda: grad @ w)
        for call in calls:
            call()
        started = time.perf_counter()
        for _ in range(repeat):
            for call in calls:
                call()
        timings[shape] = (time.perf_counter() - started) / repeat
    return sum(4.0 * m * k * n for m, k, n in shapes) / sum(timings[shape] for shape in shapes)


def time_shares(fn, top: int = 8) -> dict:
    """Where a training step's CPU time goes (torch.profiler, self time per op over one more pass): matmuls (eager
    attention's included), dtype casts (autocast's fp32 <-> bf16 copies), attention (SDPA kernels only), and the
    largest other ops, as shares of the total."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = {event.key: event.self_cpu_time_total for event in prof.key_averages()}
    total = sum(ops.values())
    groups = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm"), "dtype_casts": ("aten::copy_", "aten::_to_copy"),
              "attention": tuple(k for k in ops if "scaled_dot_product" in k)}
    shares = {name: sum(ops.get(k, 0) for k in keys) / total for name, keys in groups.items()}
    grouped = {k for keys in groups.values() for k in keys}
    rest = sorted(((t, k) for k, t in ops.items() if k not in grouped), reverse=True)
    shares.update({k: t / total for t, k in rest[:top]})
    shares["other"] = 1 - sum(shares.values())
    return {k: round(v, 4) for k, v in shares.items()}


# The criterion of the TRL comparison: in fp32 our step and TRL's are the same arithmetic, so their loss curves agree
# to float rounding; the bf16 curves are reported beside it, not judged (bf16 rounding of near-zero gradients alone
# moves Adam's first updates, and the curves, apart by about 1%).
TRL_FP32_TOLERANCE = 1e-5


def compare_with_trl(bm, objective, train_samples, batch_size: int, steps: int, learning_rate: float = 1e-4) -> dict:
    """Our training step against TRL's SFTTrainer: same adapter start, batches, order, optimizer and loss. LoRA
    dropout is off for both (their random masks would differ), so the loss curves compare the arithmetic: under bf16
    autocast, as both train (the speeds), and in fp32, where rounding cannot hide a different loss or update (Adam's
    first steps move every weight by about lr * sign(gradient), so bf16 rounding of near-zero gradients alone moves
    the bf16 curves apart by about 1%)."""
    missing = [name for name in ("trl", "datasets") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"TRL comparison skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')")
        return {"train_speedup_vs_trl": None}
    examples = bm.behavior_examples(train_samples[:batch_size * steps])
    start = {k: v.detach().clone() for k, v in trainable_state(bm.model).items()}
    report = {}
    fp32_objective = AnswerTokenLoss(bm.tokenizer.pad_token_id, bm.device, None, objective.attn_implementation)
    for suffix, loss, amp in (("", objective, bm.amp_dtype), ("_fp32", fp32_objective, None)):
        ours_losses, ours_rate = our_steps(bm, loss, examples, batch_size, learning_rate)
        bm.model.load_state_dict(start, strict=False)
        trl_losses, trl_rate = trl_steps(bm, examples, batch_size, steps, learning_rate, bf16=amp == torch.bfloat16)
        bm.model.load_state_dict(start, strict=False)
        gaps = [abs(a - b) / abs(b) for a, b in zip(ours_losses, trl_losses)]
        report.update({f"loss_max_relative_gap_vs_trl{suffix}": max(gaps), f"ours_losses{suffix}": ours_losses,
                       f"trl_losses{suffix}": trl_losses})
        if not suffix:
            report.update({"train_speedup_vs_trl": ours_rate / trl_rate, "trl_train_samples_per_s": trl_rate,
                           "ours_same_batches_samples_per_s": ours_rate, "trl_steps": steps})
    report["loss_curves_match_trl"] = report["loss_max_relative_gap_vs_trl_fp32"] <= TRL_FP32_TOLERANCE
    report["loss_curves_criterion"] = f"fp32 relative gap <= {TRL_FP32_TOLERANCE:g} (bf16 reported, not judged)"
    return report


def our_steps(bm, objective, examples, batch_size: int, learning_rate: float) -> tuple[list[float], float]:
    """The step of behaviorlm.training.train_lora (answer-only logits, left padding, its attention kernel), constant
    LR: the losses and samples/s (the first step is the warm-up)."""
    params = [p for p in bm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    bm.model.train()
    losses, marks = [], []
    for i in range(0, len(examples), batch_size):
        batch = objective.batch(examples[i:i + batch_size])
        loss_sum, tokens = objective.loss_sum(bm.model, batch), objective.count(batch)
        (loss_sum / tokens).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss_sum.item() / tokens)
        marks.append(time.perf_counter())
    return losses, batch_size * (len(marks) - 1) / (marks[-1] - marks[0])


def trl_steps(bm, examples, batch_size: int, steps: int, learning_rate: float,
              bf16: bool) -> tuple[list[float], float]:
    """TRL's SFTTrainer on pre-tokenized prompt+answer rows with a completion mask, in the same order (no
    shuffling), with our settings: the losses and samples/s (the first step is the warm-up)."""
    import tempfile

    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = [{"input_ids": list(e.prompt_ids) + list(e.answer_ids),
             "completion_mask": [0] * len(e.prompt_ids) + [1] * len(e.answer_ids)} for e in examples]

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(output_dir=tmp, per_device_train_batch_size=batch_size, max_steps=steps,
                           learning_rate=learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                           weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no",
                           gradient_checkpointing=False, bf16=bf16, use_cpu=bm.device.type == "cpu",
                           dataloader_num_workers=0, completion_only_loss=True, max_length=None,
                           disable_tqdm=True, seed=0)
        clock = StepClock()
        trainer = InOrder(model=bm.model, args=config, train_dataset=Dataset.from_list(rows),
                          processing_class=bm.tokenizer, callbacks=[clock])
        trainer.train()
    # accelerate wrapped the model's forward in autocast (bf16=True) and leaves it so: without the model's own
    # forward back, all that runs after (the fp32 curves, the bench's timings) would silently run under bf16
    trainer.accelerator.unwrap_model(bm.model, keep_fp32_wrapper=False)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h][:steps]
    return losses, batch_size * (len(clock.marks) - 1) / (clock.marks[-1] - clock.marks[0])
