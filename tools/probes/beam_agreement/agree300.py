"""Exact ranking against the bounded width beam on 300 tuned NYC test prompts (2026-11-26): seconds, top-1
agreement, score differences, and the exact gaps where the top-1s differ. Hands its scores to full300.py through
$BEHAVIORLM_CACHE/probes/beam_agreement/. Run from the repo root:
    .venv/bin/python -m tools.probes.beam_agreement.agree300 > results/beam_agreement/agree300.log"""
import json
import time

import numpy as np

from behaviorlm.scoring import beam_scores
from tools.probes.beam_agreement.setup import HANDOFF, tuned_on_300_prompts

cfg, ds, bm = tuned_on_300_prompts()
prompts = bm.prompt_ids(ds.test)
bm.scorer.batch_size = 8
t=time.time(); e = bm.scorer.score(prompts); te=time.time()-t
t=time.time(); b = beam_scores(bm.model, prompts, bm.scorer.trie, bm.device, bm.amp_dtype, width=10, batch_size=8, exact_top=1); tb=time.time()-t
fin=np.isfinite(b); d=np.abs(e[fin]-b[fin])
dis = np.flatnonzero(e.argmax(1)!=b.argmax(1))
gaps = [float(e[i].max() - e[i][b[i].argmax()]) for i in dis]
print(json.dumps({'n': len(prompts), 'exact_s': te, 'beam_s': tb, 'agree': float(np.mean(e.argmax(1)==b.argmax(1))), 'diff_mean': float(d.mean()), 'diff_max': float(d.max()), 'disagree_gaps': gaps}))
np.save(HANDOFF / 'e300.npy', e); np.save(HANDOFF / 'b300.npy', b)
