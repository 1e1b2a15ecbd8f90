"""A non-finite step is skipped and counted, never applied; many of them stop the stage with a clear error."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import behaviorlm.training as training
from behaviorlm.models import add_lora
from behaviorlm.training import NonFiniteTrainingError, TrainExample, train_lora
from helpers import tiny_model_and_samples


def lora_model_and_examples(n: int = 40):
    model, tokenizer, _, _, _ = tiny_model_and_samples()
    model = add_lora(model, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0,
                                              "target_modules": ["q_proj", "v_proj"]}))
    rng = np.random.default_rng(0)
    vocab = len(tokenizer)
    examples = [TrainExample(tuple(rng.integers(3, vocab, rng.integers(5, 12)).tolist()),
                             tuple(rng.integers(3, vocab, 2).tolist())) for _ in range(n)]
    return model, tokenizer, examples


def poison(monkeypatch, bad_calls: set[int]):
    """answer_loss_sum returns NaN on the given calls (0-based), as a bf16 overflow on a GPU did."""
    original, calls = training.answer_loss_sum, {"n": 0}

    def patched(model, batch, amp_dtype, device):
        loss, tokens = original(model, batch, amp_dtype, device)
        if calls["n"] in bad_calls:
            loss = loss * float("nan")
        calls["n"] += 1
        return loss, tokens

    monkeypatch.setattr(training, "answer_loss_sum", patched)


def sections(epochs=1, batch_size=2, patience=2, **train):
    """The `train` section and a stage's, as the config gives them, set for a short CPU run: no warm-up, the model's
    own attention kernel, no compilation unless asked."""
    from behaviorlm.config import StageTrainConfig, TrainConfig

    train_cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), {
        "batch_size": batch_size, "warmup_ratio": 0.0, "attn_implementation": "sdpa", "compile": "never", **train})
    stage_cfg = OmegaConf.merge(OmegaConf.structured(StageTrainConfig),
                                {"max_epochs": epochs, "learning_rate": 1e-2, "patience": patience})
    return train_cfg, stage_cfg


def train(model, tokenizer, examples, epochs=1):
    return train_lora(model, examples, *sections(epochs), pad_id=tokenizer.pad_token_id, device=torch.device("cpu"),
                      amp_dtype=None, desc="a_tuning")


def test_one_nan_step_is_skipped_and_the_adapter_stays_finite(monkeypatch):
    model, tokenizer, examples = lora_model_and_examples()  # 20 steps an epoch: one skip is allowed
    poison(monkeypatch, {3})
    history = train(model, tokenizer, examples)
    assert history[0].skipped_steps == 1
    assert np.isfinite(history[0].train_loss)
    lora = [p for n, p in model.named_parameters() if "lora" in n]
    assert lora and all(torch.isfinite(p).all() for p in lora)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # the other steps trained


def test_a_clean_run_skips_nothing():
    model, tokenizer, examples = lora_model_and_examples()
    assert [h.skipped_steps for h in train(model, tokenizer, examples, epochs=2)] == [0, 0]


def test_many_nan_steps_stop_the_stage_with_one_clear_line(monkeypatch):
    model, tokenizer, examples = lora_model_and_examples()
    poison(monkeypatch, set(range(100)))
    with pytest.raises(NonFiniteTrainingError, match=r"a_tuning epoch 1: 20 of 20 steps had a non-finite loss"):
        train(model, tokenizer, examples)


def test_eager_attention_trains_the_same_adapter_as_sdpa_and_the_kernel_comes_back():
    from behaviorlm.models import training_attention

    assert training_attention("auto", torch.device("cpu")) == "eager"  # the CPU default
    assert training_attention("auto", torch.device("cuda")) is None  # the model's own (SDPA / flash) on a GPU
    assert training_attention("sdpa", torch.device("cpu")) == "sdpa"
    adapters, seen = {}, []
    for kernel in ("sdpa", "eager"):
        model, tokenizer, examples = lora_model_and_examples(12)  # prompts of 5-11 tokens: left padding in play
        backbone = model.get_base_model()
        forward = backbone.model.layers[0].self_attn.forward

        def recording(*args, _forward=forward, _backbone=backbone, **kwargs):
            seen.append(_backbone.config._attn_implementation)
            return _forward(*args, **kwargs)

        backbone.model.layers[0].self_attn.forward = recording
        train_lora(model, examples, *sections(batch_size=4, attn_implementation=kernel),
                   pad_id=tokenizer.pad_token_id, device=torch.device("cpu"), amp_dtype=None, desc="a_tuning")
        assert backbone.config._attn_implementation == "sdpa"  # restored for scoring, whose trie mask needs it
        adapters[kernel] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n}
    assert seen == ["sdpa"] * 3 + ["eager"] * 3  # 3 steps each, in the kernel asked for
    for name, weight in adapters["sdpa"].items():
        torch.testing.assert_close(adapters["eager"][name], weight, rtol=1e-4, atol=1e-5)
    assert any((w != 0).any() for n, w in adapters["eager"].items() if "lora_B" in n)  # it trained


def test_each_precision_setting_stores_weights_and_computes_in_its_own_dtypes(monkeypatch):
    """`mixed` keeps fp32 weights on a GPU (the remedy the non-finite error names besides fp32) and still computes
    in bf16; `auto` and `bf16` store bf16 weights only on a GPU; `fp32` never autocasts. (On a CPU with native bf16;
    the next test covers one without.)"""
    from behaviorlm import models
    from behaviorlm.models import autocast_dtype, weight_dtype_for

    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)

    cpu, cuda, bf16, fp32 = torch.device("cpu"), torch.device("cuda"), torch.bfloat16, torch.float32
    got = {precision: (weight_dtype_for(precision, cpu), weight_dtype_for(precision, cuda),
                       autocast_dtype(precision, cpu), autocast_dtype(precision, cuda))
           for precision in ("auto", "bf16", "mixed", "fp32")}
    assert got == {"auto": (fp32, bf16, bf16, bf16), "bf16": (fp32, bf16, bf16, bf16),
                   "mixed": (fp32, fp32, bf16, bf16), "fp32": (fp32, fp32, None, None)}


class RecordingLoss(training.AnswerTokenLoss):
    """The default objective, noting at each step whether the decoder layers run compiled."""

    def __init__(self, model, pad_id):
        super().__init__(pad_id, torch.device("cpu"), None)
        from behaviorlm.models import decoder_layers

        self.layers, self.compiled_at_step = decoder_layers(model), []

    def loss_sum(self, model, batch):
        self.compiled_at_step.append(all(layer._compiled_call_impl is not None for layer in self.layers))
        return super().loss_sum(model, batch)


@pytest.mark.slow  # inductor compiles C++ (about 20 s on a cold cache)
def test_compiled_layers_train_the_same_adapter_and_validation_runs_eagerly():
    from behaviorlm.models import compile_unavailable, decoder_layers

    if compile_unavailable(torch.device("cpu")):  # the rule and its error are tested below on any machine
        pytest.skip(compile_unavailable(torch.device("cpu")))

    adapters, compiled_in_validation = {}, []
    for setting in ("never", "always"):
        model, tokenizer, examples = lora_model_and_examples(12)  # 3 steps an epoch of 4, prompts of 5-11 tokens
        keys = list(model.state_dict())
        objective = RecordingLoss(model, tokenizer.pad_token_id)

        def validate(layers=decoder_layers(model)):
            compiled_in_validation.append(any(layer._compiled_call_impl is not None for layer in layers))
            return 0.5

        train_lora(model, examples, *sections(epochs=2, batch_size=4, patience=5, compile=setting),
                   pad_id=tokenizer.pad_token_id, device=torch.device("cpu"), amp_dtype=None, desc="a_tuning",
                   objective=objective, validate=validate)
        assert objective.compiled_at_step == [setting == "always"] * 6
        assert list(model.state_dict()) == keys  # nn.Module.compile leaves the module tree (checkpoints) alone
        assert not any(layer._compiled_call_impl is not None for layer in objective.layers)  # scoring: eager
        adapters[setting] = {n: p.detach().clone() for n, p in model.named_parameters() if "lora" in n}
    assert compiled_in_validation == [False] * 4
    for name, weight in adapters["never"].items():  # fp32: the fused kernels reorder sums, nothing more
        torch.testing.assert_close(adapters["always"][name], weight, rtol=1e-3, atol=1e-4)
    assert any((w != 0).any() for n, w in adapters["always"].items() if "lora_B" in n)  # it trained


def test_auto_compiles_only_long_stages_where_a_compiler_is(monkeypatch):
    from behaviorlm.distributed import LOCAL
    from behaviorlm.models import compile_unavailable

    model, _, _ = lora_model_and_examples(4)
    cpu = torch.device("cpu")
    short = training.layer_compilation("auto", model, cpu, training.COMPILE_MIN_STEPS - 1, LOCAL, "a_tuning")
    assert short is None and training.layer_compilation("never", model, cpu, 10 ** 6, LOCAL, "a_tuning") is None
    if compile_unavailable(cpu) is None:
        layers = training.layer_compilation("auto", model, cpu, training.COMPILE_MIN_STEPS, LOCAL, "a_tuning")
        assert layers is not None and len(layers.layers) == model.get_base_model().config.num_hidden_layers
        assert not any(layer._compiled_call_impl is not None for layer in layers.layers)  # compiled, not active
        with layers.active():
            assert all(layer._compiled_call_impl is not None for layer in layers.layers)
        assert not any(layer._compiled_call_impl is not None for layer in layers.layers)
    # auto leaves a GPU eager (regional compilation was measured on CPUs only), even with Triton there
    monkeypatch.setattr(training, "compile_unavailable", lambda device: None)
    assert training.layer_compilation("auto", model, torch.device("cuda"), 10 ** 6, LOCAL, "a_tuning") is None
    monkeypatch.undo()
    monkeypatch.setattr("behaviorlm.models.shutil.which", lambda name: None)  # a machine without a C++ compiler
    monkeypatch.delenv("CXX", raising=False)
    assert training.layer_compilation("auto", model, cpu, 10 ** 6, LOCAL, "a_tuning") is None
    with pytest.raises(ValueError, match=r"^train.compile=always: no C\+\+ compiler .*; set train.compile=auto "
                                         r"or never$"):
        training.layer_compilation("always", model, cpu, 10, LOCAL, "a_tuning")


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16_and_then_trains_eagerly(monkeypatch):
    from behaviorlm import models
    from behaviorlm.distributed import LOCAL

    cpu = torch.device("cpu")
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: False)  # AMD Zen 3: bf16 GEMMs emulated, ~100x slower
    assert models.autocast_dtype("auto", cpu) is None
    assert models.autocast_dtype("mixed", cpu) is torch.bfloat16  # asked for by name: as asked
    assert models.autocast_dtype("auto", torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: True)  # Zen 4 (avx512_bf16), Intel AMX
    assert models.autocast_dtype("auto", cpu) is torch.bfloat16
    model, _, _ = lora_model_and_examples(4)
    monkeypatch.setattr(training, "compile_unavailable", lambda device: None)
    assert training.layer_compilation("auto", model, cpu, 10 ** 6, LOCAL, "a_tuning", amp_dtype=None) is None
