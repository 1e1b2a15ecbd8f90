"""The stage cache on its own: an entry is written whole or not at all, and a damaged one is rebuilt."""

import json

import pytest

from behaviorlm.cache import MANIFEST, StageCache, digest


def write_entry(folder):
    (folder / "adapter.pt").write_bytes(b"weights")
    (folder / "report.json").write_text(json.dumps({"epochs": 2}))


def test_saved_entry_is_a_hit_with_its_files(tmp_path, caplog):
    cache = StageCache(tmp_path)
    assert cache.load("a_tuning", "k1") is None and cache.misses == ["a_tuning"]
    cache.save("a_tuning", "k1", write_entry)
    with caplog.at_level("INFO", logger="behaviorlm.cache"):
        entry = cache.load("a_tuning", "k1")
    assert entry == tmp_path / "a_tuning" / "k1" and cache.hits == ["a_tuning"]
    assert caplog.messages[-1] == "stage cache hit: a_tuning k1"  # the run's log says which entry it reused
    assert (entry / "adapter.pt").read_bytes() == b"weights"
    assert set(json.loads((entry / MANIFEST).read_text())["files"]) == {"adapter.pt", "report.json"}
    assert cache.load("a_tuning", "k2") is None  # another key is another entry
    assert not [p for p in (tmp_path / "a_tuning").iterdir() if p.name.startswith(".")]  # no temporary left


def test_an_entry_is_written_in_a_hidden_temporary_beside_it_then_moved_into_place(tmp_path):
    """A fresh cache root (folders created), the writer's folder a hidden sibling of the entry (one rename on the
    same file system; never listed as an entry), a manifest naming the stage and every file's SHA-256."""
    import hashlib

    cache = StageCache(tmp_path / "new" / "root")
    written_in = []

    def write(folder):
        written_in.append(folder)
        write_entry(folder)

    cache.save("a_tuning", "k1", write)
    stage_dir = tmp_path / "new" / "root" / "a_tuning"
    folder, = written_in
    assert folder.parent == stage_dir and folder.name.startswith(".k1.") and not folder.exists()
    assert json.loads((stage_dir / "k1" / MANIFEST).read_text()) == {
        "stage": "a_tuning", "files": {"adapter.pt": hashlib.sha256(b"weights").hexdigest(),
                                       "report.json": hashlib.sha256(b'{"epochs": 2}').hexdigest()}}
    # another job of a sweep saving the same entry later: the first one stays, the second leaves nothing behind
    cache.save("a_tuning", "k1", lambda f: (f / "adapter.pt").write_bytes(b"other weights"))
    assert (stage_dir / "k1" / "adapter.pt").read_bytes() == b"weights"
    assert sorted(p.name for p in stage_dir.iterdir()) == ["k1"]


def test_a_corrupted_or_partial_entry_is_removed_and_reported_as_a_miss(tmp_path, caplog):
    cache = StageCache(tmp_path)
    cache.save("b_tuning", "k", write_entry)
    (tmp_path / "b_tuning" / "k" / "adapter.pt").write_bytes(b"altered")
    assert cache.load("b_tuning", "k") is None and not (tmp_path / "b_tuning" / "k").exists()
    assert cache.misses == ["b_tuning"] and cache.hits == []  # a rebuilt entry counts as a miss of its stage
    assert caplog.messages[-1] == ("stage cache: b_tuning/k is corrupted (a file is missing or altered); "
                                   "rebuilding it")
    cache.save("b_tuning", "k", write_entry)
    (tmp_path / "b_tuning" / "k" / "report.json").unlink()  # a file gone
    assert cache.load("b_tuning", "k") is None
    partial = tmp_path / "b_tuning" / "p"
    partial.mkdir()
    (partial / "adapter.pt").write_bytes(b"half")  # written but never completed: no manifest
    assert cache.load("b_tuning", "p") is None and not partial.exists()
    assert "incomplete" in caplog.text
    cache.save("b_tuning", "k", write_entry)  # and rebuilt
    assert cache.load("b_tuning", "k") is not None


def test_a_failing_writer_leaves_nothing_behind(tmp_path):
    cache = StageCache(tmp_path)

    def crash(folder):
        write_entry(folder)
        raise RuntimeError("killed mid-write")

    try:
        cache.save("a_tuning", "k", crash)
    except RuntimeError:
        pass
    assert list((tmp_path / "a_tuning").iterdir()) == []
    assert cache.load("a_tuning", "k") is None


def test_a_disabled_cache_writes_and_reads_nothing(tmp_path):
    for cache in (StageCache(tmp_path / "off", enabled=False), StageCache(None)):
        cache.save("a_tuning", "k", write_entry)
        assert cache.load("a_tuning", "k") is None and cache.partial_dir("a_tuning", "k") is None
    assert not (tmp_path / "off").exists()


def test_a_finished_stage_removes_its_epoch_checkpoints(tmp_path):
    cache = StageCache(tmp_path)
    partial = cache.partial_dir("b_tuning", "k")
    assert partial == tmp_path / "b_tuning" / "k.partial"
    partial.mkdir(parents=True)
    (partial / "epoch_1.pt").write_bytes(b"checkpoint")
    cache.save("b_tuning", "k", write_entry)
    assert not partial.exists() and cache.load("b_tuning", "k") is not None
    # a second job of a parallel sweep that trained the same stage finds the entry written: its checkpoints go too
    partial.mkdir(parents=True)
    (partial / "epoch_2.pt").write_bytes(b"checkpoint")
    cache.save("b_tuning", "k", write_entry)
    assert not partial.exists() and cache.load("b_tuning", "k") is not None
    assert [p.name for p in (tmp_path / "b_tuning").iterdir()] == ["k"]  # and no temporary folder is left


def test_a_key_digest_ignores_key_order_and_reads_any_value_as_text(tmp_path):
    """Cache keys digest resolved configs: the same settings in another order are the same key, paths and other
    values JSON cannot hold are read as text, and any changed setting is another key (20 hex digits)."""
    key = digest({"lr": 2e-4, "model": {"name": "tiny", "path": tmp_path}})
    assert key == digest({"model": {"path": tmp_path, "name": "tiny"}, "lr": 2e-4})
    assert key == digest({"lr": 2e-4, "model": {"name": "tiny", "path": str(tmp_path)}})
    assert key != digest({"lr": 1e-4, "model": {"name": "tiny", "path": tmp_path}})
    assert len(key) == 20 and int(key, 16) >= 0


@pytest.mark.slow
def test_the_untuned_model_is_ranked_once_and_a_tuned_adapter_or_another_backbone_is_not_taken_for_it(tmp_path):
    """The evaluation cache: a zero_shot job reuses an earlier one's ranking when only settings the ranking does not
    read differ; an anchor_only job, a scoring setting that changes the ranking, or another seed's tiny_random
    backbone (drawn with the seed, so another model: it once reused seed 0's ranking) is ranked anew."""
    from behaviorlm.pipeline import run
    from behaviorlm.utils import compose_config

    def job(name, *overrides):
        out = tmp_path / name
        run(compose_config(["experiment=smoke", f"cache.dir={tmp_path / 'cache'}", f"paths.output_dir={out}",
                            *overrides]))
        info = json.loads((out / "run_info.json").read_text())
        return json.loads((out / "metrics.json").read_text()), info["cache/evaluation_hit"]

    first, hit_first = job("zero0", "stage_order=zero_shot", "seed=0")
    second, hit_second = job("zero0-again", "stage_order=zero_shot", "seed=0", "train.a_tuning.learning_rate=1e-3")
    assert (hit_first, hit_second) == (0, 1)
    test = {k: v for k, v in first.items() if k.startswith("test/") and k != "test/seconds"}
    assert test == {k: v for k, v in second.items() if k in test}
    assert (tmp_path / "zero0" / "test_predictions.csv").read_text() == \
        (tmp_path / "zero0-again" / "test_predictions.csv").read_text()
    _, hit_other_backbone = job("zero1", "stage_order=zero_shot", "seed=1")
    _, hit_tuned = job("tuned", "stage_order=anchor_only", "seed=1")
    _, hit_other_scoring = job("width", "stage_order=zero_shot", "seed=1", "scoring.mode=beam",
                               "scoring.beam_seed=none", "scoring.beam_width=2")
    assert (hit_other_backbone, hit_tuned, hit_other_scoring) == (0, 0, 0)
    assert len(list((tmp_path / "cache" / "evaluation").iterdir())) == 4


def test_an_untuned_adapter_is_one_key_whatever_its_lora_a_and_a_pretrained_backbone_is_named_by_its_config():
    """Every seed's zero-shot job shares one ranking on a pretrained backbone: all lora_B zero is `untuned`
    whatever the random lora_A, and the key reads no backbone content (nor the seed) unless it is built
    in-process."""
    import torch
    from omegaconf import OmegaConf

    from behaviorlm.cache_keys import adapter_digest, backbone_content

    def state(seed, b_scale):
        torch.manual_seed(seed)
        return {"q.lora_A.default.weight": torch.randn(4, 8), "q.lora_B.default.weight": torch.randn(8, 4) * b_scale}

    assert adapter_digest(state(0, 0.0)) == adapter_digest(state(1, 0.0)) == "untuned"
    assert adapter_digest(state(0, 1.0)) != adapter_digest(state(1, 1.0))
    pretrained = OmegaConf.create({"model": {"source": "gguf_package"}})
    assert backbone_content(pretrained, model=None, tokenizer=None) is None
