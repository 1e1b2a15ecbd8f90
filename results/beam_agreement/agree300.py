import sys, time, json, numpy as np, torch
from pathlib import Path
sys.path.insert(0, '/work/main')
from experiments.bench import load_adapter
from behaviorlm.data.dataset import load_dataset
from behaviorlm.pipeline import build_behavior_model
from behaviorlm.scoring import beam_scores
from behaviorlm.utils import compose_config
cfg = compose_config(["experiment=quick_cpu", "logger=none", "aux_ratio=0", "data.max_test_samples=300"])
ds = load_dataset(cfg)
bm, _ = build_behavior_model(cfg, ds, [])
load_adapter(bm.model, Path('/work/main/results/bench_adapter'))
prompts = bm.prompt_ids(ds.test)
bm.scorer.batch_size = 8
t=time.time(); e = bm.scorer.score(prompts); te=time.time()-t
t=time.time(); b = beam_scores(bm.model, prompts, bm.scorer.trie, bm.device, bm.amp_dtype, width=10, batch_size=8, exact_top=1); tb=time.time()-t
fin=np.isfinite(b); d=np.abs(e[fin]-b[fin])
dis = np.flatnonzero(e.argmax(1)!=b.argmax(1))
gaps = [float(e[i].max() - e[i][b[i].argmax()]) for i in dis]
print(json.dumps({'n': len(prompts), 'exact_s': te, 'beam_s': tb, 'agree': float(np.mean(e.argmax(1)==b.argmax(1))), 'diff_mean': float(d.mean()), 'diff_max': float(d.max()), 'disagree_gaps': gaps}))
np.save('/tmp/exp/e300.npy', e); np.save('/tmp/exp/b300.npy', b)
