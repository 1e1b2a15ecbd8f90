"""Exact and beam top-1s under bf16, bf16 with an fp32 output layer, and fp32, on the first N of 300 tuned prompts:
which precision decides the near-ties. Run from the repo root:
    .venv/bin/python -m tools.probes.beam_agreement.numerics N > results/beam_agreement/numerics.log"""
import sys
import time

import numpy as np
import torch

from behaviorlm.scoring import beam_scores, CandidateScorer
from tools.probes.beam_agreement.setup import tuned_on_300_prompts

cfg, ds, bm = tuned_on_300_prompts()
N = int(sys.argv[1])
prompts = bm.prompt_ids(ds.test)[:N]
dev = bm.device
def run(amp, tag):
    sc = CandidateScorer(bm.model, [bm.prompts.answer_ids(n) for n in bm.vocab.names], bm.tokenizer.pad_token_id, dev, amp, 8)
    t=time.time(); e = sc.score(prompts); te=time.time()-t
    t=time.time(); b = beam_scores(bm.model, prompts, sc.trie, dev, amp, width=10, batch_size=8, exact_top=1); tb=time.time()-t
    fin = np.isfinite(b)
    d = np.abs(e[fin]-b[fin])
    print(tag, 'exact s', round(te,1), 'beam s', round(tb,1), 'agree', np.mean(e.argmax(1)==b.argmax(1)), 'absdiff mean/max', d.mean(), d.max(), flush=True)
    return e, b
e16, b16 = run(torch.bfloat16, 'bf16')
lm = bm.model.get_output_embeddings()
class FP32Head(torch.nn.Module):
    def __init__(s, w): super().__init__(); s.weight = w
    def forward(s, x):
        with torch.autocast('cpu', enabled=False):
            return torch.nn.functional.linear(x.float(), s.weight.float())
base = bm.model.get_base_model() if hasattr(bm.model,'get_base_model') else bm.model
orig = base.lm_head
base.lm_head = FP32Head(orig.weight)
eh, bh = run(torch.bfloat16, 'bf16+fp32head')
base.lm_head = orig
e32, b32 = run(None, 'fp32')
for name, x in [('e16', e16), ('b16', b16), ('eh', eh), ('bh', bh)]:
    print(name, 'top1 vs fp32 exact', np.mean(x.argmax(1) == e32.argmax(1)))
