"""The full-width two-forward beam against the bounded beam on the first N of 300 tuned prompts, bf16. Run from the
repo root:
    .venv/bin/python -m tools.probes.beam_agreement.twopass N > results/beam_agreement/twopass.log"""
import sys
import time

import numpy as np
import torch

from behaviorlm.scoring import beam_scores
from tools.probes.beam_agreement.setup import tuned_on_300_prompts

cfg, ds, bm = tuned_on_300_prompts()
N = int(sys.argv[1])
prompts = bm.prompt_ids(ds.test)[:N]
dev = bm.device; amp = torch.bfloat16
trie = bm.scorer.trie
nfirst = len(trie.first_rows)
t=time.time(); full = beam_scores(bm.model, prompts, trie, dev, amp, width=nfirst, batch_size=8); tf=time.time()-t
t=time.time(); b = beam_scores(bm.model, prompts, trie, dev, amp, width=10, batch_size=8, exact_top=1); tb=time.time()-t
fin=np.isfinite(b); d=np.abs(full[fin]-b[fin])
print('full-width s', round(tf,1), 'beam s', round(tb,1), 'agree', np.mean(full.argmax(1)==b.argmax(1)), 'diff', d.mean(), d.max(), 'first tokens', nfirst)
