"""A tuning stage killed inside an epoch resumes from its last checkpoint and ends as an uninterrupted run would.

In-process and fast: the kill is an exception raised at the training loop's kill point; the slow end-to-end chain
(a real SIGKILL at every point of a job in turn) is in test_reliability.py.
"""

import logging

import pytest
import torch

import behaviorlm.training as training
from behaviorlm.training import train_lora, trainable_state
from test_training_guard import lora_model_and_examples, sections


class Killed(Exception):
    pass


def run(checkpoint_dir=None, interval=None, kill_at=None, monkeypatch=None):
    """Two epochs of 20 batches on a tiny LoRA model built from the same seed every time."""
    if kill_at is not None:
        def kill_point(name):
            if name == kill_at:
                raise Killed(name)
        monkeypatch.setattr(training, "kill_point", kill_point)
    torch.manual_seed(0)
    model, tokenizer, examples = lora_model_and_examples()
    try:
        history = train_lora(model, examples, *sections(epochs=2, checkpoint_interval_s=interval),
                             pad_id=tokenizer.pad_token_id, device=torch.device("cpu"), amp_dtype=None,
                             desc="a_tuning", checkpoint_dir=checkpoint_dir)
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()
    return history, trainable_state(model)


def test_a_stage_killed_inside_an_epoch_resumes_to_the_same_adapter_and_losses(tmp_path, monkeypatch, caplog):
    reference_history, reference_state = run()
    with pytest.raises(Killed):
        run(tmp_path, interval=0, kill_at="a_tuning:epoch_2_batch_7", monkeypatch=monkeypatch)
    with caplog.at_level(logging.INFO, logger="behaviorlm.training"):
        history, state = run(tmp_path, interval=0)
    assert "a_tuning: resuming in epoch 2 after batch 7 of 20" in caplog.text
    assert [(h.epoch, h.train_loss) for h in history] == [(h.epoch, h.train_loss) for h in reference_history]
    assert state.keys() == reference_state.keys()
    assert all(torch.equal(state[name], reference_state[name]) for name in state)


@pytest.mark.parametrize("interval, mid_epoch_per_epoch", [(None, 0), (0, 19), (1e9, 0)])
def test_checkpoints_inside_an_epoch_follow_the_interval(tmp_path, monkeypatch, interval, mid_epoch_per_epoch):
    # 0: after every optimizer step but an epoch's last, which the epoch's own checkpoint follows; null and an
    # interval longer than the run: at epoch ends only.
    written = []
    monkeypatch.setattr(training, "save_checkpoint",
                        lambda folder, state: written.append((state["epoch"], state.get("unfinished_epoch"))))
    run(tmp_path, interval=interval)
    ends = [epoch for epoch, unfinished in written if unfinished is None]
    inside = [(epoch, unfinished["next_batch"]) for epoch, unfinished in written if unfinished is not None]
    assert ends == [1, 2]
    assert inside == [(epoch, batch) for epoch in (0, 1) for batch in range(1, 1 + mid_epoch_per_epoch)]


def test_two_jobs_checkpointing_the_same_stage_at_once_both_leave_a_whole_checkpoint(tmp_path, monkeypatch):
    """Two jobs of a parallel sweep that train the same stage share its checkpoint folder. Here the second job
    writes the same checkpoint while the first is in the middle of its write (as two processes can): with one
    temporary name for both, the second renamed the first's half-written file into place and the first's rename
    then failed (FileNotFoundError, the job lost); now each write is whole and the last one wins."""
    real_save = torch.save
    folder = tmp_path / "a_tuning" / "key.partial"
    weights = {"lora": torch.arange(6.0)}
    interleaved = []

    def save_with_the_other_job_in_the_middle(obj, f):
        real_save(obj, f)
        if not interleaved:  # once: the other job's whole save runs before this one renames
            interleaved.append(f)
            training.save_checkpoint(folder, {"epoch": 1, "weights": {"lora": torch.arange(6.0) * 2}})

    monkeypatch.setattr(torch, "save", save_with_the_other_job_in_the_middle)
    training.save_checkpoint(folder, {"epoch": 1, "weights": weights})
    assert [p.name for p in folder.iterdir()] == ["epoch_1.pt"]  # no temporary file left behind
    loaded = training.latest_checkpoint(folder)
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"]["lora"], weights["lora"])  # the last rename
    assert training.latest_checkpoint(tmp_path / "none") is None
