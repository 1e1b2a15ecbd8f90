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
trie = bm.scorer.trie
t=time.time(); f = beam_scores(bm.model, prompts, trie, bm.device, bm.amp_dtype, width=len(trie.first_rows), batch_size=8); tf=time.time()-t
e = np.load('/tmp/exp/e300.npy'); b = np.load('/tmp/exp/b300.npy')
fin=np.isfinite(b); d=np.abs(f[fin]-b[fin])
dis = np.flatnonzero(f.argmax(1)!=b.argmax(1))
print(json.dumps({'full_s': tf, 'agree_full_vs_beam': float(np.mean(f.argmax(1)==b.argmax(1))), 'agree_full_vs_onepass': float(np.mean(f.argmax(1)==e.argmax(1))), 'diff_mean': float(d.mean()), 'diff_max': float(d.max()), 'gaps': [float(f[i].max()-f[i][b[i].argmax()]) for i in dis]}))
np.save('/tmp/exp/f300.npy', f)
