"""Config composition: the schema catches typos and wrong types at compose time; every config file loads."""


import pytest
from omegaconf import OmegaConf

from behaviorlm.config import ConfigError, validate_config
from conftest import ROOT, run_entrypoint

GROUPS = ["data", "model", "prompt", "aux", "train", "selection", "scoring", "logger", "debug", "experiment",
          "launcher"]


def test_default_config_has_the_swept_top_level_keys(compose):
    cfg = compose()
    assert cfg.aux_ratio == 0.05
    assert cfg.anchor_threshold == 0.01
    assert cfg.samples_per_behavior == 20
    assert cfg.stage_order == "progressive"
    assert cfg.model.name == "smollm2_135m" and cfg.data.name == "foursquare_nyc"
    validate_config(cfg)


@pytest.mark.parametrize("group", GROUPS)
def test_every_config_file_composes_and_validates(compose, group):
    for path in sorted((ROOT / "behaviorlm" / "conf" / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"]
        if path.stem == "csv":
            overrides.append("data.path=some.csv")
        cfg = compose(*overrides)
        validate_config(cfg)
        text = path.read_text().splitlines()
        assert text[0].startswith("#"), f"{path} must open with a comment showing how it is used"
        assert any("python run.py" in line for line in text[:12]), f"{path} must show the command that uses it"


def test_cfg_job_prints_top_level_keys():
    result = run_entrypoint(["--cfg", "job"], timeout=120)
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    for key in ("aux_ratio", "anchor_threshold", "samples_per_behavior", "stage_order"):
        assert key in printed


@pytest.mark.parametrize("override, fragment", [
    ("aux_ratio=abc", "aux_ratio"),
    ("aux_ration=0.1", "aux_ration"),
    ("samples_per_behavior=1.5", "samples_per_behavior"),
])
def test_typos_and_wrong_types_fail_at_compose_time(override, fragment):
    result = run_entrypoint([override, "logger=none"], timeout=120)
    assert result.returncode != 0
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("override, key", [
    ("aux_ratio=1.0", "aux_ratio"), ("aux_ratio=-0.1", "aux_ratio"),
    ("samples_per_behavior=-3", "samples_per_behavior"),
    ("anchor_threshold=0", "anchor_threshold"), ("anchor_threshold=1.5", "anchor_threshold"),
    ("stage_order=sideways", "stage_order"), ("method=magic", "method"),
    ("scoring.beam_seed=nearby", "scoring.beam_seed"),
])
def test_out_of_range_values_name_the_key_and_value(compose, override, key):
    cfg = compose(override)
    with pytest.raises(ConfigError, match=key) as err:
        validate_config(cfg)
    assert override.split("=")[1] in str(err.value)


def test_a_seeded_beam_needs_the_bound_and_the_width_beam_does_not(compose):
    validate_config(compose("scoring.mode=beam", "scoring.beam_seed=none", "scoring.beam_exact_top=0"))
    validate_config(compose("scoring.beam_exact_top=0"))  # exact mode: no beam, no seed to check
    with pytest.raises(ConfigError, match=r"^config key 'scoring.beam_exact_top' = 0 is out of range: expected >= 1 "
                                          r"with scoring.beam_seed=history"):
        validate_config(compose("scoring.mode=beam", "scoring.beam_exact_top=0"))


def test_out_of_range_value_exits_with_one_line_and_no_output_dir(tmp_path):
    result = run_entrypoint(["aux_ratio=1.5", "logger=none", f"hydra.run.dir={tmp_path}/job"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key 'aux_ratio' = 1.5")
    assert not (tmp_path / "job" / "metrics.json").exists()


def test_unknown_model_name_fails_at_compose_time():
    result = run_entrypoint(["model=gpt5"], timeout=120)
    assert result.returncode != 0 and "gpt5" in result.stderr


def test_a_typo_among_a_sweeps_values_stops_the_sweep_before_any_job(tmp_path):
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "run.py", "-m", "experiment=smoke", "debug=fast",
                             "stage_order=progressive,jointt", f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: config key 'stage_order' = 'jointt'")
    assert not list(sweep.glob("*/metrics.json"))  # not even the valid first job ran


def test_sweep_values_come_from_overrides_and_sweeper_params():
    from omegaconf import OmegaConf

    from behaviorlm.config import ConfigError
    from behaviorlm.sweep_checks import check_sweep_values, sweep_values

    config = OmegaConf.create({"hydra": {"overrides": {"task": ["scoring.mode=exact,beam", "seed=0,1"]},
                                         "sweeper": {"params": {"+variant": "full,no_aux",
                                                                "selection.strategy": "difficulty,randon"}}}})
    found = sweep_values(config)
    assert found["scoring.mode"] == ["exact", "beam"] and found["seed"] == ["0", "1"]
    with pytest.raises(ConfigError, match="selection.strategy.*randon"):
        check_sweep_values(found)


def test_a_command_line_value_replaces_the_sweepers_params_entry_of_the_same_key():
    """As Hydra's basic sweeper runs it: `ablation=paper_main seed=0` is 4 jobs of seed 0, not 12 (the progress
    line's count, and which job folders count as an earlier sweep's, depend on it)."""
    from omegaconf import OmegaConf

    from behaviorlm.sweep_checks import sweep_values
    from behaviorlm.sweeps import planned_jobs

    config = OmegaConf.create({"hydra": {"overrides": {"task": ["+ablation=paper_main", "seed=0"]},
                                         "sweeper": {"params": {"seed": "0,1,2", "stage_order": "a,b,c,d"}}}})
    assert sweep_values(config)["seed"] == [0] and planned_jobs(config) == 4
    config.hydra.overrides.task = ["seed=3,4"]
    assert sweep_values(config)["seed"] == ["3", "4"] and planned_jobs(config) == 8


def test_a_config_composed_outside_hydra_leaves_no_empty_output_folder_behind(tmp_path):
    """`behaviorlm predict` and `evaluate` compose a config per call with a temporary output folder: one that nothing
    was written to is removed at exit, one that holds a job's outputs is kept."""
    import os
    import subprocess
    import sys

    code = ("from pathlib import Path; from behaviorlm.utils import compose_config; compose_config(); "
            "used = Path(compose_config().paths.output_dir); (used / 'metrics.json').write_text('{}')")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    left = sorted(p.name for p in tmp_path.glob("behaviorlm-*"))
    assert len(left) == 1 and (tmp_path / left[0] / "metrics.json").is_file(), left
