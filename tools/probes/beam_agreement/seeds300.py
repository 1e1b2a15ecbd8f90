"""Which seed for the seeded beam (2026-11-27): on 300 tuned NYC test prompts, for each candidate seed, how many trie
nodes ride in the prompt's forward and how often the bound needs the extra forward (a first token outside the
seed likelier than the best seeded name). Also the two exact paths against each other. Run from the repo root:
    .venv/bin/python -m tools.probes.beam_agreement.seeds300 > results/beam_agreement/seeds300.log"""
import collections, json

import numpy as np
import torch

from behaviorlm.data.dataset import load_dataset
from behaviorlm.models import autocast, fp32_output_layer
from behaviorlm.scoring import beam_scores
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT, compose_config

base = ["experiment=quick_cpu", "logger=none", "aux_ratio=0"]
train = load_dataset(compose_config(base)).train
cfg, ds, bm = tuned_behavior_model([*base, "data.max_test_samples=300"], PROJECT_ROOT / "results" / "bench_adapter")
samples, prompts, trie = ds.test, bm.prompt_ids(ds.test), bm.scorer.trie
names, first = bm.vocab.names, list(trie.first_rows)
column = {n: j for j, n in enumerate(names)}
first_of = [first.index(int(t)) for t in trie.score_tokens[:, 0]]
bm.scorer.batch_size = 8
exact = bm.scorer.score(prompts)  # one pass over [prompt | every node]
two_pass = beam_scores(bm.model, prompts, trie, bm.device, bm.amp_dtype, width=len(first), batch_size=8)
with torch.no_grad(), fp32_output_layer(bm.model), autocast(bm.device, bm.amp_dtype):
    first_lp = np.stack([torch.log_softmax(bm.model(input_ids=torch.tensor([p]), logits_to_keep=1).logits[0, -1]
                                           .float(), -1)[first].numpy() for p in prompts])


def evaluate(seeds):
    nodes, extra, changed = [], 0, 0
    for i, seed in enumerate(seeds):
        fed = {first_of[j] for j in seed}
        nodes.append(len({r for f in fed for r in trie.first_rows[first[f]]}))
        under = [j for j in range(len(names)) if first_of[j] in fed]
        best = exact[i, under].max() if under else -np.inf
        if any(first_lp[i, f] > best for f in range(len(first)) if f not in fed):
            extra += 1
            changed += int(exact[i].argmax() not in under)
    return {"mean_nodes": float(np.mean(nodes)), "extra_round_share": extra / len(seeds),
            "extra_rounds_that_changed_top1": changed}


frequent = [n for n, _ in collections.Counter(s.target for s in train).most_common()]
successors = collections.defaultdict(collections.Counter)
for s in train:
    for a, b in zip((*s.history,), (*s.history[1:], s.target)):
        successors[a][b] += 1
history = [{column[h] for h in s.history if h in column} for s in samples]
report = {"prompts": len(prompts),
          "exact_one_pass_vs_two_pass_top1": float(np.mean(exact.argmax(1) == two_pass.argmax(1))),
          "exact_one_pass_vs_two_pass_max_abs_nats": float(np.abs(exact - two_pass).max()),
          "history": evaluate(history)}
for n in (5, 10):
    report[f"history + {n} most frequent"] = evaluate([h | {column[f] for f in frequent[:n]} for h in history])
for n in (1, 3, 5):
    report[f"history + {n} commonest successors of the last event"] = evaluate(
        [h | {column[b] for b, _ in successors[s.history[-1]].most_common(n)} for h, s in zip(history, samples)])
for w in (3, 5, 10):  # the model's own likeliest first tokens: what the width beam feeds, after the prompt's forward
    top = [np.argsort(-row)[:w] for row in first_lp]
    report[f"model's top {w} first tokens (needs the prompt forward first)"] = evaluate(
        [[j for j in range(len(names)) if first_of[j] in set(t.tolist())] for t in top])
print(json.dumps(report, indent=1))
