import sys, time, numpy as np, torch
from pathlib import Path
sys.path.insert(0, '/work/main')
from experiments.bench import load_adapter
from behaviorlm.data.dataset import load_dataset
from behaviorlm.pipeline import build_behavior_model
from behaviorlm.scoring import beam_scores, CandidateScorer
from behaviorlm.utils import compose_config
N = int(sys.argv[1])
cfg = compose_config(["experiment=quick_cpu", "logger=none", "aux_ratio=0", f"data.max_test_samples=300"])
ds = load_dataset(cfg)
bm, _ = build_behavior_model(cfg, ds, [])
load_adapter(bm.model, Path('/work/main/results/bench_adapter'))
prompts = bm.prompt_ids(ds.test)[:N]
dev = bm.device; amp = torch.bfloat16
trie = bm.scorer.trie
nfirst = len(trie.first_rows)
t=time.time(); full = beam_scores(bm.model, prompts, trie, dev, amp, width=nfirst, batch_size=8); tf=time.time()-t
t=time.time(); b = beam_scores(bm.model, prompts, trie, dev, amp, width=10, batch_size=8, exact_top=1); tb=time.time()-t
fin=np.isfinite(b); d=np.abs(full[fin]-b[fin])
print('full-width s', round(tf,1), 'beam s', round(tb,1), 'agree', np.mean(full.argmax(1)==b.argmax(1)), 'diff', d.mean(), d.max(), 'first tokens', nfirst)
