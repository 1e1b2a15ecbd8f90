"""What the training-step measurements here share: the bench's model and batches (SmolLM2-135M with
results/bench_adapter, length-grouped batches of 8 real NYC examples, bf16 autocast, LoRA dropout 0) and the loop's
objective with its attention kernel (eager on CPU)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from behaviorlm.data.dataset import load_dataset  # noqa: E402
from behaviorlm.models import training_attention  # noqa: E402
from behaviorlm.pipeline import build_behavior_model  # noqa: E402
from behaviorlm.training import AnswerTokenLoss  # noqa: E402
from behaviorlm.utils import PROJECT_ROOT, compose_config  # noqa: E402
from experiments.bench import load_adapter  # noqa: E402
from experiments.bench_training import grouped_train_batches  # noqa: E402


def bench_step_setup(steps: int = 6):
    """(behavior model, its training examples in batch order, collated batches, objective): the bench's."""
    cfg = compose_config(["experiment=quick_cpu", "logger=none", "aux_ratio=0"])
    dataset = load_dataset(cfg)
    bm, _ = build_behavior_model(cfg, dataset, [])
    load_adapter(bm.model, PROJECT_ROOT / "results" / "bench_adapter")
    examples, batches = grouped_train_batches(bm, dataset.train, cfg.train.batch_size, steps)
    objective = AnswerTokenLoss(bm.tokenizer.pad_token_id, bm.device, bm.amp_dtype,
                                training_attention(cfg.train.attn_implementation, bm.device))
    return bm, examples, batches, objective
