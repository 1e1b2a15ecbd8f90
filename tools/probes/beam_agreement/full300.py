"""The full-width beam (every first token) against agree300.py's one-pass exact ranking and bounded beam on the same
300 prompts: whether the two exact computation paths agree. Run after agree300.py, from the repo root:
    .venv/bin/python -m tools.probes.beam_agreement.full300 > results/beam_agreement/full300.log"""
import json
import time

import numpy as np

from behaviorlm.scoring import beam_scores
from tools.probes.beam_agreement.setup import HANDOFF, tuned_on_300_prompts

cfg, ds, bm = tuned_on_300_prompts()
prompts = bm.prompt_ids(ds.test)
trie = bm.scorer.trie
t=time.time(); f = beam_scores(bm.model, prompts, trie, bm.device, bm.amp_dtype, width=len(trie.first_rows), batch_size=8); tf=time.time()-t
e = np.load(HANDOFF / 'e300.npy'); b = np.load(HANDOFF / 'b300.npy')
fin=np.isfinite(b); d=np.abs(f[fin]-b[fin])
dis = np.flatnonzero(f.argmax(1)!=b.argmax(1))
print(json.dumps({'full_s': tf, 'agree_full_vs_beam': float(np.mean(f.argmax(1)==b.argmax(1))), 'agree_full_vs_onepass': float(np.mean(f.argmax(1)==e.argmax(1))), 'diff_mean': float(d.mean()), 'diff_max': float(d.max()), 'gaps': [float(f[i].max()-f[i][b[i].argmax()]) for i in dis]}))
np.save(HANDOFF / 'f300.npy', f)
