"""LoRA training steps of real architectures with random weights, for a GPU (`tools.gpu.gpu_check` runs them).

Speed and numerics need no checkpoint: `shape_check` times our LoRA step (`answer_loss_sum`, AdamW) on full rows of
random tokens for the SmolLM2-135M and Qwen2.5-1.5B shapes and reports its MFU against the bf16 GEMM peak measured
in the same run (`gemm_peak`) and the card's nominal peak; `padding_check` asks whether a left-padded step is finite
per attention kernel and precision.
"""

from __future__ import annotations

import json
import time

import torch

from behaviorlm.training import answer_loss_sum, collate
from behaviorlm.utils import compose_config


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Real architectures with random weights: enough to time them, nothing to download.
# (architecture, config file with its LoRA targets, shape, rows per step on a GPU: enough tokens to fill the card)
SHAPES = {
    "smollm2_135m": ("llama", "smollm2_135m", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                                 num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                                 tie_word_embeddings=True), 64),
    "qwen2_5_1_5b": ("qwen2", "qwen2_5_1_5b", dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                                  num_hidden_layers=28, num_attention_heads=12,
                                                  num_key_value_heads=2, tie_word_embeddings=True), 16),
}
# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), for the nominal MFU.
NOMINAL_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def gemm_peak(device: torch.device, size: int = 8192, repeat: int = 10, dtype: torch.dtype = torch.bfloat16) -> float:
    """Measured matmul rate (FLOP/s) in `dtype`: the denominator of the MFU actually reachable on this card (on a
    CPU, the fp32 rate its fp32 steps are measured against: an AVX2 CPU emulates bf16 ~100x slower)."""
    if device.type != "cuda":
        size = 1024
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * size ** 3 * repeat / (time.perf_counter() - started)


def random_lora_model(shape: str, device: torch.device, dtype: torch.dtype, attention: str | None = None,
                      lora_dropout: float | None = None):
    """A real architecture with random weights (seed 0) and its config file's LoRA adapter: speed needs no weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from behaviorlm.models import add_lora

    model_type, model_config_name, shape_kwargs, _ = SHAPES[shape]
    torch.manual_seed(0)
    extra = {"attn_implementation": attention} if attention else {}
    config = AutoConfig.for_model(model_type, **shape_kwargs, **extra)
    with device:  # initialise on the card: a 1.5B model's random init on the host takes longer than the timing
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    overrides = [f"model={model_config_name}"] + ([f"model.lora.dropout={lora_dropout}"] if lora_dropout is not None
                                                  else [])
    return add_lora(model, compose_config(overrides).model.lora), config


def shape_check(shape: str, device_name: str, batch_size: int | None, seq_len: int, steps: int, peak: float,
                variant: str = "default") -> dict:
    """Training throughput and MFU of our LoRA step on a randomly initialised model of a real shape.

    `variant` names what differs from the model config's LoRA step, '+'-joined: `nodropout` (LoRA dropout 0: each
    adapted projection then skips a copy of its input), `compile` (torch.compile fuses the element-wise work around
    the GEMMs: RMSNorm, SiLU, rotary, the LoRA adds), `graphs` (compile with CUDA graphs), `autocast` (bf16
    autocast, as the pipeline trains), `profile` (top operators of two more steps), `bNN` (NN rows per step)."""
    parts = set(variant.split("+")) - {"default"}
    unknown = {p for p in parts if p not in ("nodropout", "compile", "graphs", "profile", "autocast")
               and not (p[0] == "b" and p[1:].isdigit())}
    if unknown:
        raise SystemExit(f"gpu_check: unknown shape variant part(s) {sorted(unknown)} in {variant!r}")
    batch_size = next((int(p[1:]) for p in parts if p[0] == "b"), batch_size)
    from behaviorlm.models import resolve_device

    batch_size = batch_size or SHAPES[shape][3]
    device = resolve_device(device_name)
    model, config = random_lora_model(shape, device, torch.bfloat16 if device.type == "cuda" else torch.float32,
                                      lora_dropout=0.0 if "nodropout" in parts else None)
    base_params = sum(p.numel() for n, p in model.named_parameters() if "lora" not in n and "embed" not in n)
    answer_width = 4  # about a venue name's tokens: the loss covers only the answer, as in training
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch_size, seq_len), generator=generator).to(device)
    batch = (ids, torch.ones_like(ids), torch.arange(seq_len, device=device).expand(batch_size, -1),
             ids[:, -answer_width:].clone())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    # autocast: bf16 autocast as the pipeline trains (peft keeps LoRA weights in fp32; without autocast their
    # matmuls run as fp32 FFMA kernels, 17% of a 1.5B step in the H100 profile, results/gpu/gpu_check_mfu_qwen_2.json)
    amp = torch.bfloat16 if "autocast" in parts else None
    # graphs: CUDA graphs on top of the fused kernels (no per-kernel launch cost from Python)
    step_model = torch.compile(model, mode="reduce-overhead" if "graphs" in parts else None) if "compile" in parts \
        else model

    def train_step():
        loss, tokens = answer_loss_sum(step_model, batch, amp, device)
        (loss / tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps (kernel selection, allocator)
            sync(device)
            started = time.perf_counter()
        train_step()
    sync(device)
    seconds = (time.perf_counter() - started) / steps
    top_kernels = profile_steps(train_step, device) if "profile" in parts else None
    flops = 4 * base_params * batch_size * seq_len / seconds
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    nominal = next((v for k, v in NOMINAL_BF16_PEAK.items() if k in card), None)
    return {"shape": shape, "variant": variant, "weights": "random (real architecture)", "device": card,
            "base_params": base_params,
            "lora_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "batch_size": batch_size, "seq_len": seq_len, "timed_steps": steps, "seconds_per_step": seconds,
            "train_tokens_per_s": batch_size * seq_len / seconds,
            "train_samples_per_s": batch_size / seconds, "train_flop_per_s": flops,
            "bf16_gemm_peak_flop_per_s": peak, "mfu_vs_measured_peak": flops / peak,
            "mfu_vs_nominal_peak": flops / nominal if nominal else None, "peak_memory_gb": peak_memory_gb(device),
            **({"top_kernels": top_kernels} if top_kernels else {})}


def profile_steps(train_step, device: torch.device, steps: int = 2, top: int = 15) -> list[dict]:
    """Where a step's time goes: the `top` operators by device time over `steps` steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step()
        sync(device)
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    return [{"op": e.key[:80], "ms_per_step": getattr(e, attr) / 1000 / steps, "calls_per_step": e.count / steps}
            for e in events[:top]]


def padding_check(device_name: str) -> list[dict]:
    """Is a left-padded LoRA training step finite? One step on the SmolLM2 shape (random weights) per attention
    kernel and precision, with our collate (left padding, pad rows attend to nothing) and loss."""
    from behaviorlm.models import resolve_device
    from behaviorlm.training import TrainExample

    device = resolve_device(device_name)
    shape_kwargs = SHAPES["smollm2_135m"][2]
    rng = torch.Generator().manual_seed(0)
    vocab = shape_kwargs["vocab_size"]
    examples = [TrainExample(tuple(torch.randint(0, vocab, (int(n),), generator=rng).tolist()),
                             tuple(torch.randint(0, vocab, (int(a),), generator=rng).tolist()))
                for n, a in zip(torch.randint(40, 200, (16,), generator=rng),
                                torch.randint(2, 6, (16,), generator=rng))]
    results = []
    for attention in ("sdpa", "eager"):
        for weights, amp in (("bf16", None), ("fp32", torch.bfloat16)):
            for padded in (True, False):
                batch_examples = examples if padded else [examples[0]] * len(examples)
                model, _ = random_lora_model("smollm2_135m", device,
                                             torch.bfloat16 if weights == "bf16" else torch.float32, attention)
                model.train()
                batch = collate(batch_examples, 0, device)
                loss, tokens = answer_loss_sum(model, batch, amp, device)
                (loss / tokens).backward()
                grads = [p.grad for p in model.parameters() if p.grad is not None]
                results.append({"attention": attention, "weights": weights, "autocast": str(amp),
                                "left_padded": padded, "loss": float(loss / tokens),
                                "loss_finite": bool(torch.isfinite(loss).item()),
                                "grads_finite": all(bool(torch.isfinite(g).all()) for g in grads)})
                print(json.dumps(results[-1]), flush=True)
                del model
    return results
