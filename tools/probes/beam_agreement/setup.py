"""What the beam-agreement probes share: the bench's tuned SmolLM2 (results/bench_adapter) on 300 NYC test prompts,
and the folder through which agree300.py hands its scores to full300.py."""

from behaviorlm.predict import cache_root
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT

HANDOFF = cache_root() / "probes" / "beam_agreement"


def tuned_on_300_prompts():
    """(config, dataset with 300 test samples, the tuned behavior model)."""
    HANDOFF.mkdir(parents=True, exist_ok=True)
    return tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0", "data.max_test_samples=300"],
                                PROJECT_ROOT / "results" / "bench_adapter")
