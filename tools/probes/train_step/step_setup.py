"""What the training-step measurements here share: the bench's model and batches (SmolLM2-135M with
results/bench_adapter, length-grouped batches of 8 real NYC examples, bf16 autocast, LoRA dropout 0) and the loop's
objective with its attention kernel (eager on CPU)."""
from behaviorlm.models import training_attention
from behaviorlm.training import AnswerTokenLoss
from behaviorlm.tuned import tuned_behavior_model
from behaviorlm.utils import PROJECT_ROOT
from tools.bench.bench_training import grouped_train_batches


def bench_step_setup(steps: int = 6):
    """(behavior model, its training examples in batch order, collated batches, objective): the bench's."""
    cfg, dataset, bm = tuned_behavior_model(["experiment=quick_cpu", "aux_ratio=0"],
                                            PROJECT_ROOT / "results" / "bench_adapter")
    examples, batches = grouped_train_batches(bm, dataset.train, cfg.train.batch_size, steps)
    objective = AnswerTokenLoss(bm.tokenizer.pad_token_id, bm.device, bm.amp_dtype,
                                training_attention(cfg.train.attn_implementation, bm.device))
    return bm, examples, batches, objective
