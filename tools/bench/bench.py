"""Scoring and training speed, measured side by side on the real model and NYC prompts.

    python -m tools.bench.bench                     # make bench; writes results/bench.json
    python -m tools.bench.bench --samples 8         # quicker (32 prompts by default)

It times, on the same model (SmolLM2-135M by default, bf16 autocast on CPU, the output layer in fp32 as
`scoring.fp32_logits` sets it) and the same NYC prompts:
  * exact trie ranking of all 192 behaviors per prompt (behaviorlm.scoring.CandidateScorer);
  * the FLOP floor of that ranking: one plain forward over a sequence as long as the prompt plus the trie's
    internal nodes (so `exact_vs_floor_forward` near 1 means the ranking costs no more than its tokens);
  * naive ranking, one full forward per (prompt, candidate), on a few prompts (`exact_speedup_vs_naive`);
  * rankings of both are compared (`naive_exact_top1_agreement` must be 1.0);
  * beam mode as `scoring.beam_seed` sets it (history: the names of the user's history scored in the prompt's
    forward; top `scoring.beam_exact_top` exact by branch and bound): its time against one plain forward over the
    prompt alone (`beam_vs_prompt_forward`), its top-1 agreement with the exact ranking on 300 test prompts, and
    the share of them that needed the bound's extra forward; the same for the width beam (`scoring.beam_width`
    first tokens in a second forward), with and without the bound; the share of prompts with a near-tie
    (`near_tie_share`: best two within `scoring.near_tie_epsilon`) and the agreement without near-tie rescoring;
  * cost per query next to the sequence models (the paper's open question 2): ms at batch 1 and batched, and FLOPs
    per query (torch's FlopCounterMode), for exact and beam ranking and for SASRec and BERT4Rec;
  * HF `generate` with the same beam width and as many new tokens as the trie is deep (`beam_speedup_vs_generate`);
  * LoRA training steps of our loop (answer-only logits) in samples/s and the FLOP rate they reach, as a stage of
    100+ steps trains them (`train.compile`: the decoder layers compiled), against this machine's GEMM peak in the
    step's own precision (bf16 under autocast, fp32 where `model.precision=auto` chose fp32),
    the two timed in interleaved rounds (`train_flop_fraction_of_peak`; eagerly: `..._eager`), and against the
    peak of the step's own GEMM shapes in the same precision (`train_flop_fraction_of_step_shapes`);
  * TRL's SFTTrainer on the same model, LoRA adapter (same initial weights), batches in the same order, optimizer
    settings and completion-only loss (`train_speedup_vs_trl`, and the largest relative gap between the two
    loss curves over those steps: judged in fp32, `loss_curves_match_trl`, bf16 reported beside it). Needs
    `pip install -e ".[bench]"`; skipped with a note when trl is missing.

`--adapter` loads a tuned LoRA (a run folder's `adapter/`) first: the beam's agreement with the exact ranking
matters on the tuned model that selection and evaluation score with, not on the untuned base.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from omegaconf import OmegaConf

from behaviorlm.data.dataset import load_dataset
from behaviorlm.distributed import LOCAL
from behaviorlm.hardware import machine
from behaviorlm.models import autocast, fp32_output_layer, training_attention
from behaviorlm.near_ties import rescore_near_ties
from behaviorlm.scoring import beam_scores, naive_scores
from behaviorlm.training import COMPILE_MIN_STEPS, AnswerTokenLoss, layer_compilation
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT, atomic_write_json, compose_config
from tools.bench.bench_training import (compare_with_trl, grouped_train_batches, step_gemm_shapes, step_shape_peak,
                                        time_shares, without_lora_dropout)


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat


def interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of one call of each function, timed in turn in each of `rounds` rounds (one warm-up call each)."""
    for fn in fns.values():
        fn()
    seconds = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def gemm(dtype: torch.dtype, size: int = 2048, repeat: int = 5) -> tuple[Callable[[], None], float]:
    """`repeat` square matmuls, the machine's GEMM peak probe, and their FLOPs."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)

    def run():
        for _ in range(repeat):
            a @ b
    return run, 2.0 * size ** 3 * repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=32,
                        help="prompts for the exact/floor/beam timing (8 gave beam ratios 1.5-1.6x that 32 did not)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the beam/prompt-forward and the training-step/GEMM-peak timings")
    parser.add_argument("--naive-samples", type=int, default=2, help="prompts for the naive timing")
    parser.add_argument("--train-steps", type=int, default=6)
    parser.add_argument("--agreement-samples", type=int, default=300, help="test prompts for beam vs exact top-1")
    parser.add_argument("--latency-samples", type=int, default=16, help="queries timed per model and batch size")
    parser.add_argument("--trl-steps", type=int, default=8, help="optimizer steps of the TRL comparison")
    parser.add_argument("--adapter", type=Path, help="a tuned LoRA folder (a run's adapter/) to load first")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=gemma3_270m")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # before this process adds its own

    cfg, dataset, bm = tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0", *args.overrides], args.adapter)
    samples = dataset.test[:args.samples]
    prompts = bm.prompt_ids(samples)
    nodes = bm.scorer.trie.n_nodes
    mean_prompt = float(np.mean([len(p) for p in prompts]))
    device, amp = bm.device, bm.amp_dtype

    bm.scorer.batch_size = 1
    exact_s = timed(lambda: bm.scorer.score(prompts)) / len(prompts)
    floor_ids = [torch.randint(0, len(bm.tokenizer), (1, len(p) + nodes)) for p in prompts]

    def floor_forward():  # the same arithmetic as the ranking: bf16 body, output layer as scoring.fp32_logits says
        with torch.no_grad(), fp32_output_layer(bm.model, bm.fp32_logits), autocast(device, amp):
            for ids in floor_ids:
                bm.model(input_ids=ids, logits_to_keep=nodes + 1)

    floor_s = timed(floor_forward) / len(prompts)
    candidates = [bm.prompts.answer_ids(n) for n in bm.vocab.names]
    few = prompts[:args.naive_samples]
    started = time.perf_counter()
    reference = naive_scores(bm.model, few, candidates, device, amp, fp32_logits=bm.fp32_logits)
    naive_s = (time.perf_counter() - started) / len(few)
    exact = bm.scorer.score(few)
    agreement = float(np.mean(reference.argmax(1) == exact.argmax(1)))

    # Beam mode against the exact ranking and against a plain forward over the prompt alone.
    width, exact_top, seed_mode = cfg.scoring.beam_width, cfg.scoring.beam_exact_top, cfg.scoring.beam_seed
    history_seeds = {}  # prompt -> its sample's history seed (a prompt spells out its history: one seed each)

    def beam(chunk, seed=seed_mode, **settings):
        seeds = [history_seeds[tuple(p)] for p in chunk] if seed == "history" else None
        return beam_scores(bm.model, chunk, bm.scorer.trie, device, amp, **{
            "width": width, "exact_top": exact_top, "fp32_logits": bm.fp32_logits, "seed": seeds,
            "near_tie_epsilon": bm.near_tie_epsilon, **settings})

    def add_seeds(some_samples):
        history_seeds.update(zip(map(tuple, bm.prompt_ids(some_samples)), bm.history_seed(some_samples)))

    add_seeds(samples)
    prompt_ids = [torch.tensor([p]) for p in prompts]

    def prompt_forward():
        with torch.no_grad(), fp32_output_layer(bm.model, bm.fp32_logits), autocast(device, amp):
            for ids in prompt_ids:
                bm.model(input_ids=ids, logits_to_keep=1)

    # Interleaved rounds: each ratio's two sides are timed a few seconds apart, so the machine's drift over the
    # run (10-20% here between phases) does not enter it; the ratio reported is the median round's.
    rounds = interleaved({"prompt": prompt_forward, "beam": lambda: beam(prompts),
                          "width_beam": lambda: beam(prompts, seed="none")}, args.rounds)
    prompt_s, beam_s, width_beam_s = (float(np.median(rounds[k])) / len(prompts)
                                      for k in ("prompt", "beam", "width_beam"))
    beam_ratios = [b / p for b, p in zip(rounds["beam"], rounds["prompt"])]
    width_ratios = [b / p for b, p in zip(rounds["width_beam"], rounds["prompt"])]
    # Agreement on test prompts drawn (data.eval_seed) from the whole test period, not only the preset's sample.
    period = load_dataset(compose_config(["experiment=quick_cpu", "logger=none", "aux_ratio=0",
                                          f"data.max_test_samples={args.agreement_samples}", *args.overrides]))
    agreement_samples = bm.prompt_ids(period.test)
    add_seeds(period.test)
    bm.scorer.batch_size = 8  # batched: agreement only
    # exact ranking without near-tie rescoring, then the same scores rescored (an exact pass scores every name, so
    # rescoring afterwards is what the pass with scoring.near_tie_epsilon computes)
    epsilon, bm.scorer.near_tie_epsilon = bm.near_tie_epsilon, 0.0
    unresolved_scores = bm.scorer.score(agreement_samples)
    bm.scorer.near_tie_epsilon = epsilon
    exact_scores = unresolved_scores.copy()
    near_ties = rescore_near_ties(bm.model, agreement_samples, exact_scores, bm.scorer.trie, device, amp,
                                  bm.fp32_logits, bm.near_tie_epsilon) if bm.near_tie_epsilon > 0 else 0
    exact_top1 = exact_scores.argmax(1)
    beam_ranked = beam(agreement_samples, batch_size=8)
    beam_top1 = beam_ranked.argmax(1)
    beam_agreement = float(np.mean(beam_top1 == exact_top1))
    width_agreement = float(np.mean(beam(agreement_samples, "none", batch_size=8).argmax(1) == exact_top1))
    plain_agreement = float(np.mean(beam(agreement_samples, "none", batch_size=8, exact_top=0).argmax(1)
                                    == exact_top1))
    # how often near-tie rescoring ran, and the agreement without it: each path deciding near-ties with its own rounding
    near_tie_share = near_ties / len(agreement_samples)
    agreement_without_rescoring = float(np.mean(beam(agreement_samples, batch_size=8, near_tie_epsilon=0.0).argmax(1)
                                                == unresolved_scores.argmax(1)))
    extra_round_share = bound_round_share(bm, beam_ranked, period.test) if seed_mode == "history" else None
    # Where they disagree, how far apart the two names are under the exact ranking: a few hundredths of a nat is
    # bf16 noise between two computation paths (KV cache + subtree vs one trie pass), not a pruned better name;
    # scoring.fp32_logits (default) removes its largest part, the bf16 rounding of the logits themselves.
    rows = np.flatnonzero(beam_top1 != exact_top1)
    gaps = exact_scores[rows, exact_top1[rows]] - exact_scores[rows, beam_top1[rows]]
    add_seeds(dataset.test[:args.latency_samples])
    latency = query_costs(cfg, dataset, bm, beam, dataset.test[:args.latency_samples])
    generate_s = timed(lambda: hf_generate(bm, prompts, width=width)) / len(prompts)

    # Training: our loop's step on real NYC examples (prompt + answer), bf16 autocast, answer-only logits.
    examples, batches = grouped_train_batches(bm, dataset.train, cfg.train.batch_size, args.train_steps)
    params = [p for p in bm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    bm.model.train()
    # the loop's objective, with the attention kernel train.attn_implementation gives it (auto: eager on CPU)
    objective = AnswerTokenLoss(bm.tokenizer.pad_token_id, device, amp,
                                training_attention(cfg.train.attn_implementation, device))

    def train_steps():
        for batch in batches:
            (objective.loss_sum(bm.model, batch) / objective.count(batch)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    # First, from the adapter as loaded (the timings below train it on): our loop and TRL's, both eager.
    with without_lora_dropout(bm.model):
        trl = compare_with_trl(bm, objective, dataset.train, cfg.train.batch_size, args.trl_steps)
    shares = time_shares(train_steps)  # the eager step: what compiling has to fuse
    with without_lora_dropout(bm.model):  # what the LoRA dropout masks cost (model.lora.dropout)
        train_no_dropout_s = timed(train_steps)
    # The step as a stage of COMPILE_MIN_STEPS or more trains (train.compile), its compilation timed on its own.
    started = time.perf_counter()
    compiled = layer_compilation(cfg.train.compile, bm.model, device, COMPILE_MIN_STEPS, LOCAL, "bench",
                                 bm.amp_dtype)
    if compiled is not None:
        with compiled.active():
            train_steps()
    compile_s = time.perf_counter() - started

    def compiled_steps():
        with compiled.active() if compiled is not None else contextlib.nullcontext():
            train_steps()

    # Interleaved rounds: the step (eager, and as the stage runs it) and the GEMM peak it is divided by, each
    # measured a few seconds apart, so the machine's drift between runs (peaks of 809-901 GFLOP/s) cancels out.
    # The peak of the precision the step computes in: bf16 under autocast; fp32 where precision=auto chose fp32 (a
    # CPU without native bf16, whose emulated bf16 GEMM is ~100x slower and no ceiling for an fp32 step).
    peak_dtype = bm.amp_dtype or torch.float32
    peak_probe, peak_flops = gemm(peak_dtype)
    train_rounds = interleaved({"peak": peak_probe, "eager": train_steps, "stage": compiled_steps}, args.rounds)
    tokens = sum(int(b[1].sum()) for b in batches)
    base_params = sum(p.numel() for n, p in bm.model.named_parameters() if "lora" not in n and "embed" not in n)
    # forward 2N + backward through activations 2N per token (frozen weights need no weight gradients).
    step_flops = 4 * base_params * tokens
    fractions = {kind: [step_flops / t / (peak_flops / p) for t, p in zip(train_rounds[kind], train_rounds["peak"])]
                 for kind in ("eager", "stage")}
    train_s, eager_s = (float(np.median(train_rounds[kind])) for kind in ("stage", "eager"))
    train_flops, peak = step_flops / train_s, peak_flops / float(np.median(train_rounds["peak"]))
    # the fair ceiling beside the strict one: the same GEMMs at the step's own (M, K, N), in its precision
    shapes_peak = step_shape_peak(peak_dtype, step_gemm_shapes(bm.model, batches))

    report = {
        "machine": machine(load_at_start), "model": cfg.model.name,
        "command": " ".join(["python -m tools.bench.bench", *sys.argv[1:]]),
        "trie_internal_nodes": nodes, "mean_prompt_tokens": mean_prompt, "candidates": len(bm.vocab.names),
        "exact_seconds_per_sample": exact_s, "floor_forward_seconds_per_sample": floor_s,
        "naive_seconds_per_sample": naive_s, "exact_vs_floor_forward": exact_s / floor_s,
        "beam_seconds_per_sample": beam_s, "prompt_forward_seconds_per_sample": prompt_s,
        "beam_vs_prompt_forward": float(np.median(beam_ratios)), "beam_speedup_vs_exact": exact_s / beam_s,
        "beam_vs_prompt_forward_rounds": beam_ratios,
        "beam_seed": seed_mode, "beam_width": width, "beam_exact_top": exact_top, "fp32_logits": bm.fp32_logits,
        "beam_top1_agreement": beam_agreement, "beam_extra_round_share": extra_round_share,
        "near_tie_epsilon": bm.near_tie_epsilon, "near_tie_share": near_tie_share,
        "beam_top1_agreement_without_near_tie_rescoring": agreement_without_rescoring,
        "width_beam_vs_prompt_forward": float(np.median(width_ratios)), "width_beam_top1_agreement": width_agreement,
        "plain_beam_top1_agreement": plain_agreement, "beam_agreement_samples": len(agreement_samples),
        "beam_disagreement_exact_gaps_nats": [round(float(g), 4) for g in gaps], **latency,
        "generate_seconds_per_sample": generate_s, "beam_speedup_vs_generate": generate_s / beam_s,
        "adapter": str(args.adapter) if args.adapter else None,
        "exact_speedup_vs_naive": naive_s / exact_s, "naive_exact_top1_agreement": agreement,
        "train_samples_per_s": len(examples) / train_s, "train_tokens_per_s": tokens / train_s,
        "train_flop_per_s": train_flops, "gemm_peak_flop_per_s": peak, "gemm_peak_dtype": str(peak_dtype),
        "bf16_gemm_peak_flop_per_s": peak if peak_dtype == torch.bfloat16 else None,
        "train_flop_fraction_of_peak": float(np.median(fractions["stage"])),
        "train_flop_fraction_of_peak_rounds": fractions["stage"], "train_compile": cfg.train.compile,
        "step_shapes_peak_flop_per_s": shapes_peak, "train_flop_fraction_of_step_shapes": train_flops / shapes_peak,
        "train_compiled": compiled is not None, "train_compile_seconds": compile_s if compiled is not None else None,
        "train_flop_fraction_of_peak_eager": float(np.median(fractions["eager"])),
        "train_flop_fraction_of_peak_eager_rounds": fractions["eager"],
        "train_compiled_speedup": eager_s / train_s, "train_time_shares": shares,
        "lora_dropout": cfg.model.lora.dropout, "train_attn_implementation": objective.attn_implementation,
        "train_flop_fraction_of_peak_without_dropout": step_flops / train_no_dropout_s / peak, **trl,
    }
    atomic_write_json(args.out, report)
    pad = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key.ljust(pad)}  {value:.4g}" if isinstance(value, float) else f"{key.ljust(pad)}  {value}")
    print(f"written: {args.out}")


def bound_round_share(bm, scores: np.ndarray, samples) -> float:
    """The share of seeded rankings that needed the bound's extra forward: those that scored a name whose first
    token no history name shares."""
    first = [int(t) for t in bm.scorer.trie.score_tokens[:, 0]]
    extra = [any(first[j] not in {first[c] for c in seed} for j in np.flatnonzero(np.isfinite(row)))
             for row, seed in zip(scores, bm.history_seed(samples))]
    return float(np.mean(extra))


def query_costs(cfg, dataset, bm, beam, samples, batch: int = 8) -> dict:
    """What one prediction costs (the paper's open question 2): ms per query at batch 1 and at `batch`, and FLOPs
    per query (torch's FlopCounterMode over one query), for BehaviorLM exact and beam and for SASRec and BERT4Rec
    as configured in `baselines` (untrained weights: the cost does not depend on them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from behaviorlm.baselines import build_baseline

    prompts = bm.prompt_ids(samples)

    def exact(chunk):
        bm.scorer.batch_size = len(chunk)
        bm.scorer.score(chunk)

    models = {"exact": (exact, prompts), "beam": (lambda chunk: beam(chunk, batch_size=len(chunk)), prompts)}
    for method in ("sasrec", "bert4rec"):
        recommender = build_baseline(OmegaConf.merge(cfg, {"method": method}), dataset)
        models[method] = (recommender.scores, list(samples))
    costs = {}
    for name, (predict, queries) in models.items():
        for size, suffix in ((1, ""), (batch, "_batched")):
            chunks = [queries[i:i + size] for i in range(0, len(queries), size)]
            seconds = timed(lambda: [predict(chunk) for chunk in chunks])
            costs[f"latency_ms_{name}{suffix}"] = 1000 * seconds / len(queries)
        # the fused inference path of nn.TransformerEncoderLayer is invisible to the counter: count the plain ops
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            predict(queries[:1])
        torch.backends.mha.set_fastpath_enabled(fastpath)
        costs[f"flops_per_query_{name}"] = counter.get_total_flops()
    costs["latency_batch"] = batch
    return costs


def hf_generate(bm, prompts, width: int) -> None:
    """HF beam search over the full vocabulary, as many new tokens as the trie is deep (the beam's worst case)."""
    depth = int(bm.scorer.trie.score_mask.sum(1).max())
    with torch.no_grad(), autocast(bm.device, bm.amp_dtype):
        for prompt in prompts:
            bm.model.generate(input_ids=torch.tensor([prompt]),
                              attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              num_beams=width, do_sample=False, max_new_tokens=depth, min_new_tokens=depth,
                              pad_token_id=bm.tokenizer.pad_token_id)


if __name__ == "__main__":
    main()
