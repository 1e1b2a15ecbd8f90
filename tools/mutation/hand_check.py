"""Each surviving mutant run by hand against the fast core test files (-x, 'not slow'), 20 s cap; random order."""
import json, os, random, subprocess
from concurrent.futures import ThreadPoolExecutor
names = json.load(open('results/mutation.json'))['survived']
random.seed(0); random.shuffle(names)
files = ["tests/test_metrics.py", "tests/test_selection.py", "tests/test_cache.py", "tests/test_data.py",
         "tests/test_scoring.py", "tests/test_beam.py", "tests/test_behavior_model.py",
         "tests/test_logit_adjustment.py", "tests/test_remedies.py", "tests/test_bad_inputs.py",
         "tests/test_training_guard.py", "tests/test_cache_keys.py", "tests/test_protocol.py"]
def check(n):
    env = dict(os.environ, MUTANT_UNDER_TEST=n)
    try:
        r = subprocess.run([os.path.abspath('.venv/bin/python'), '-m', 'pytest', '-x', '-q', '-p', 'no:randomly',
                            '-m', 'not slow', *files], cwd='mutants', env=env, capture_output=True, text=True,
                            timeout=20)
        verdict = "killed" if r.returncode == 1 else f"rc{r.returncode}"
    except subprocess.TimeoutExpired:
        verdict = "no failure within 20 s"
    print(verdict, n, flush=True)
with ThreadPoolExecutor(2) as pool:
    list(pool.map(check, names))
