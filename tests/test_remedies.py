"""Long-tail remedies beside the paper's method: exact adapter interpolation (train.b_tuning.merge_alpha) and the
balanced-softmax B-Tuning loss (train.b_tuning.loss)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel, get_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

from behaviorlm.config import ConfigError
from behaviorlm.data.dataset import load_dataset
from behaviorlm.models import add_lora, adopt_as_default, interpolate_lora
from behaviorlm.pipeline import run
from behaviorlm.stages import CandidateSoftmaxLoss
from behaviorlm.training import TrainExample
from conftest import run_entrypoint

LORA = OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]})


def tiny_lora_model():
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    return add_lora(base, LORA).eval()


def randomize_adapter(model, seed):
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.data = torch.randn(param.shape, generator=generator) * 0.3


def hand_merged_logits(model, states, weights, ids):
    """Reference: a plain copy of the backbone with W + sum_i w_i * scaling * B_i A_i written into each weight."""
    base = LlamaForCausalLM(model.base_model.model.config)
    plain = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in model.state_dict().items() if "lora_" not in k}
    base.load_state_dict(plain)
    scaling = LORA.alpha / LORA.r
    with torch.no_grad():
        for name, module in base.named_modules():
            key = f"base_model.model.{name}"
            if f"{key}.lora_A.weight" in states[0]:
                for state, weight in zip(states, weights):
                    module.weight += weight * scaling * state[f"{key}.lora_B.weight"] @ state[f"{key}.lora_A.weight"]
    return base.eval()(ids).logits


def test_interpolation_is_the_weighted_sum_of_the_two_updates_exactly():
    model = tiny_lora_model()
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    randomize_adapter(model, 1)
    a_state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    a_logits = model(ids).logits
    randomize_adapter(model, 2)
    b_state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    b_logits = model(ids).logits
    assert not torch.allclose(a_logits, b_logits, atol=1e-3)
    for alpha in (1.0, 0.0, 0.3):
        interpolate_lora(model, a_state, alpha)
        expected = hand_merged_logits(model, [b_state, a_state], [alpha, 1 - alpha], ids)
        assert torch.allclose(model(ids).logits, expected, atol=1e-5), alpha
    # averaging the factors instead (the easy mistake) is measurably different: the test can tell
    averaged = {k: 0.3 * b_state[k] + 0.7 * a_state[k] for k in a_state}
    wrong = hand_merged_logits(model, [averaged], [1.0], ids)
    assert not torch.allclose(model(ids).logits, wrong, atol=1e-3)


def test_interpolated_adapter_saves_and_reloads_as_a_plain_run_adapter(tmp_path):
    model = tiny_lora_model()
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))
    randomize_adapter(model, 1)
    a_state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    randomize_adapter(model, 2)
    interpolate_lora(model, a_state, 0.4)
    expected = model(ids).logits
    adopt_as_default(model, "interpolated")
    assert list(model.peft_config) == ["default"] and model.peft_config["default"].r == 2 * LORA.r
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()  # not in a subfolder
    base = LlamaForCausalLM(model.base_model.model.config)
    base.load_state_dict({k.replace("base_model.model.", "").replace(".base_layer", ""): v
                          for k, v in model.state_dict().items() if "lora_" not in k})
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)


def test_a_mismatched_a_tuned_adapter_is_refused():
    model = tiny_lora_model()
    state = {k: v for k, v in get_peft_model_state_dict(model).items() if "layers.0." in k}
    with pytest.raises(ValueError, match="does not match"):
        interpolate_lora(model, state, 0.5)
    assert list(model.peft_config) == ["default"]


def test_adapter_interpolation_needs_a_tuning_before_b_tuning_in_one_process(compose, tmp_path):
    from behaviorlm.stages import check_remedies

    check_remedies(compose("experiment=smoke", "stage_order=progressive", "train.b_tuning.merge_alpha=0.5",
                           output_dir=tmp_path))  # A then B, one process: allowed
    with pytest.raises(ConfigError) as error:
        check_remedies(compose("experiment=smoke", "stage_order=balanced_first", "train.b_tuning.merge_alpha=0.5",
                               output_dir=tmp_path))
    assert str(error.value) == (
        "config key 'train.b_tuning.merge_alpha' = 0.5 interpolates from the A-tuned to the B-tuned adapter, and "
        "stage_order=balanced_first does not A-tune before B-Tuning (use progressive, or merge_alpha=1)")
    with pytest.raises(ConfigError) as error:
        check_remedies(compose("experiment=smoke", "stage_order=progressive", "train.b_tuning.merge_alpha=0.5",
                               "launcher=torchrun", output_dir=tmp_path))
    assert str(error.value) == ("config key 'train.b_tuning.merge_alpha' = 0.5 is not supported with "
                                "launcher=torchrun yet: run the interpolation with launcher=local")


@pytest.mark.parametrize("overrides, key", [
    (["stage_order=joint", "train.b_tuning.merge_alpha=0.5"], "merge_alpha"),
    (["stage_order=balanced_first", "train.b_tuning.merge_alpha=0.5"], "merge_alpha"),
    (["train.b_tuning.merge_alpha=1.5"], "merge_alpha"),
    (["train.b_tuning.loss=focal"], "train.b_tuning.loss"),
])
def test_remedy_settings_that_cannot_work_are_config_errors(compose, tmp_path, overrides, key):
    cfg = compose("experiment=smoke", *overrides, output_dir=tmp_path)
    with pytest.raises(ConfigError, match=key):
        run(cfg)


@pytest.mark.slow
def test_merge_alpha_reproduces_both_end_points_and_reuses_the_tuned_stages(compose, tmp_path):
    def job(name, *overrides):
        cfg = compose("experiment=smoke", "debug=fast", f"cache.dir={tmp_path}/cache", *overrides,
                      output_dir=tmp_path / name)
        return run(cfg), tmp_path / name

    anchor_only, _ = job("anchor_only", "stage_order=anchor_only")
    progressive, _ = job("progressive", "stage_order=progressive")
    at_zero, at_zero_dir = job("alpha0", "stage_order=progressive", "train.b_tuning.merge_alpha=0")
    at_half, _ = job("alpha05", "stage_order=progressive", "train.b_tuning.merge_alpha=0.5")
    for name in ("acc_overall", "acc_anchor", "acc_tail", "macro_f1"):
        assert at_zero[f"test/{name}"] == pytest.approx(anchor_only[f"test/{name}"], abs=1e-9), name
    assert at_zero["test/merge_alpha"] == 0.0 and progressive["test/merge_alpha"] == 1.0
    # alpha is applied after the stages: every stage of the alpha jobs came from the cache
    for metrics in (at_zero, at_half):
        assert metrics["a_tuning/cache_hit"] == metrics["b_tuning/cache_hit"] == 1
        assert "val/acc_overall" in metrics  # chosen on validation, not on the test
    assert "val/acc_overall" not in progressive
    # the saved run predicts with the interpolated adapter: its reloaded test top-1 matches the job's
    from behaviorlm.predict import BehaviorPredictor

    predictor = BehaviorPredictor.load(at_zero_dir, device="cpu")
    cfg = compose("experiment=smoke", "debug=fast")
    test = load_dataset(cfg).test
    top1 = [ranked[0][0] for ranked in predictor.predict_samples(test, k=1)]
    recorded = pd.read_csv(at_zero_dir / "test_predictions.csv")["top5"].map(lambda r: (json.loads(r) or [None])[0])
    assert np.mean(np.array(top1) == recorded.to_numpy()) >= 0.95


def smoke_behavior_model(compose, tmp_path):
    from behaviorlm.pipeline import build_behavior_model

    cfg = compose("experiment=smoke", output_dir=tmp_path)
    dataset = load_dataset(cfg)
    bm, _ = build_behavior_model(cfg, dataset, [])
    return bm, dataset


def test_candidate_softmax_loss_is_the_cross_entropy_of_the_scorers_ranking(compose, tmp_path):
    bm, dataset = smoke_behavior_model(compose, tmp_path)
    samples = dataset.train[:6]
    examples = bm.behavior_examples(samples)
    offset = np.linspace(-1.0, 1.0, len(bm.vocab.names))
    objective = CandidateSoftmaxLoss(bm, offset)
    batch = objective.batch(examples)
    assert objective.count(batch) == 6
    bm.model.eval()
    with torch.no_grad():
        loss = objective.loss_sum(bm.model, batch).item()
    scores = bm.scorer.score([e.prompt_ids for e in examples]) + offset  # the scorer's own, no grad
    targets = [bm.vocab.names.index(s.target) for s in samples]
    logits = torch.tensor(scores, dtype=torch.float64)
    expected = -torch.log_softmax(logits, dim=1)[range(6), targets].sum().item()
    assert loss == pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="aux"):
        objective.batch([TrainExample((1, 2), (3, 4, 5, 6, 7, 8, 9), kind="aux")])


class FreeScores(torch.nn.Module):
    """A 'model' whose candidate scores are free parameters, the same for every prompt: what a loss teaches them
    at its optimum is then the prior it implies."""

    def __init__(self, n):
        super().__init__()
        self.scores = torch.nn.Parameter(torch.zeros(n))

    def forward(self, n_prompts):
        return self.scores.expand(n_prompts, -1)


def test_balanced_softmax_on_a_balanced_set_teaches_the_training_prior_and_ce_a_flat_one():
    from types import SimpleNamespace

    from behaviorlm.data.samples import BehaviorVocab
    from behaviorlm.stages import logit_adjustment

    counts = {"Home": 600, "Office": 300, "Gym": 90, "Zoo": 9}
    vocab = BehaviorVocab(names=list(counts), train_counts=counts, categories={}, anchors={"Home", "Office"},
                          anchor_threshold=0.2)
    answer = {name: (10 + i,) for i, name in enumerate(vocab.names)}
    scorer = SimpleNamespace(log_likelihoods=lambda prompts, model: model(len(prompts)))
    bm = SimpleNamespace(scorer=scorer, vocab=vocab, device=torch.device("cpu"),
                         prompts=SimpleNamespace(answer_ids=lambda name: answer[name]))
    balanced = [name for name in vocab.names for _ in range(25)]  # the B set: 25 of each
    examples = [TrainExample((1, 2, 3), answer[name]) for name in balanced]
    learned = {}
    for loss, offset in (("balanced_softmax", logit_adjustment(vocab, balanced, tau=-1.0)),
                         ("plain softmax", np.zeros(4))):
        model = FreeScores(4)
        objective = CandidateSoftmaxLoss(bm, offset)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        batch = objective.batch(examples)
        for _ in range(500):
            optimizer.zero_grad()
            (objective.loss_sum(model, batch) / objective.count(batch)).backward()
            optimizer.step()
        learned[loss] = torch.softmax(model.scores.detach(), 0).numpy()
    smoothed = np.array([601, 301, 91, 10]) / 1003  # add-one smoothed, as logit_adjustment smooths
    assert np.allclose(learned["balanced_softmax"], smoothed, atol=0.01), learned
    assert np.allclose(learned["plain softmax"], 0.25, atol=0.01), learned


def home_gym_objective() -> CandidateSoftmaxLoss:
    """The balanced-softmax objective over two names, Home (answer ids (10,)) and Gym ((11, 12)), no offset."""
    from types import SimpleNamespace

    from behaviorlm.data.samples import BehaviorVocab

    vocab = BehaviorVocab(names=["Home", "Gym"], train_counts={"Home": 3, "Gym": 1}, categories={}, anchors={"Home"})
    answer = {"Home": (10,), "Gym": (11, 12)}
    bm = SimpleNamespace(scorer=None, vocab=vocab, device=torch.device("cpu"),
                         prompts=SimpleNamespace(answer_ids=lambda name: answer[name]))
    return CandidateSoftmaxLoss(bm, np.zeros(2))


def test_balanced_softmax_refuses_an_answer_that_is_not_a_behavior_name():
    objective = home_gym_objective()  # Home answers (10,), Gym (11, 12)
    aux = TrainExample((1, 2), (40, 41, 42), kind="aux")
    with pytest.raises(ValueError, match=r"^balanced_softmax: 1 training example\(s\) answer with something other than "
                                         r"a behavior name \(aux conversations\?\); use loss=ce for that stage$"):
        objective.batch([TrainExample((1,), (10,)), aux])


def test_a_balanced_softmax_batch_holds_the_names_rows_its_count_and_the_longest_prompt():
    objective = home_gym_objective()  # Home answers (10,), Gym (11, 12)
    batch = objective.batch([TrainExample((1,), (11, 12)), TrainExample((2, 3, 4), (10,)), TrainExample((5,), (10,))])
    assert batch[0] == [(1,), (2, 3, 4), (5,)] and batch[1].tolist() == [1, 0, 0]  # rows of vocab.names
    assert objective.count(batch) == 3 and objective.width(batch) == 3  # the longest prompt (a skipped step logs it)


@pytest.mark.slow
def test_balanced_softmax_b_tuning_runs_end_to_end_and_is_its_own_cache_entry(compose, tmp_path):
    results = {}
    for loss in ("ce", "balanced_softmax"):
        cfg = compose("experiment=smoke", "debug=fast", "stage_order=progressive", f"train.b_tuning.loss={loss}",
                      f"cache.dir={tmp_path}/cache", output_dir=tmp_path / loss)
        results[loss] = run(cfg)
    ce, bs = results["ce"], results["balanced_softmax"]
    assert bs["status"] == "completed" and bs["b_tuning/skipped_steps"] == 0
    assert bs["a_tuning/cache_hit"] == 1 and bs["difficulty_selection/cache_hit"] == 1  # shared with ce
    assert bs["b_tuning/cache_hit"] == 0  # the loss changes what B-Tuning learns: never ce's adapter
    assert bs["b_tuning/n_examples"] == ce["b_tuning/n_examples"]


def test_wise_ft_scales_the_tuned_update_exactly_and_zero_is_the_untuned_model():
    from behaviorlm.models import scale_lora_update

    model = tiny_lora_model()
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(3))
    with model.disable_adapter():
        untuned = model(ids).logits
    randomize_adapter(model, 1)
    tuned_state = {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}
    assert not torch.allclose(model(ids).logits, untuned, atol=1e-3)
    scale_lora_update(model, 0.3)  # alpha x (s B A): the same logits as a hand-merged 0.3 x the update
    assert torch.allclose(model(ids).logits, hand_merged_logits(model, [tuned_state], [0.3], ids), atol=1e-5)
    scale_lora_update(model, 0.0)
    assert torch.allclose(model(ids).logits, untuned, atol=1e-6)


@pytest.mark.slow
def test_wise_ft_at_zero_tests_as_the_zero_shot_job_and_reuses_every_stage(tmp_path):
    import json

    env = {"BEHAVIORLM_STAGE_CACHE": str(tmp_path / "cache")}
    runs = {}
    for name, extra in {"tuned": [], "wise0": ["scoring.wise_ft_alpha=0"], "zero": ["stage_order=zero_shot"]}.items():
        result = run_entrypoint(["experiment=smoke", "debug=fast", "stage_order=joint", "train.max_steps_per_epoch=40",
                                 "train.a_tuning.max_epochs=2", "data.max_test_samples=60", *extra,
                                 f"hydra.run.dir={tmp_path}/{name}"], env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        runs[name] = tmp_path / name
    predictions = {name: pd.read_csv(folder / "test_predictions.csv")["top5"].tolist() for name, folder in runs.items()}
    assert predictions["wise0"] == predictions["zero"] != predictions["tuned"]
    info = json.loads((runs["wise0"] / "run_info.json").read_text())
    assert info["cache/misses"] == 0  # the joint stage came from the cache of the first run
    assert json.loads((runs["wise0"] / "metrics.json").read_text())["test/wise_ft_alpha"] == 0.0
