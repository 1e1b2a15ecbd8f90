"""Stages have one home: behaviorlm/stage_plan.py declares every stage and stage order; no other module of the
package names a stage by its string, so adding a stage is one declaration (and a runner for a new kind of work)."""

import ast
from pathlib import Path

from omegaconf import OmegaConf

from behaviorlm.config import CHOICES, BehaviorLMConfig
from behaviorlm.stage_plan import SCORES_STAGE, STAGE_PLANS, STAGES, TRAIN_SECTIONS, TUNING_STAGES, first_index

PACKAGE = Path(__file__).resolve().parents[1] / "behaviorlm"


def test_no_module_but_the_declaration_names_a_stage():
    names = set(STAGES)
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "stage_plan.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in names:
                found.setdefault(node.value, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, found


def test_every_plan_runs_declared_stages_and_every_declaration_is_complete():
    assert CHOICES["stage_order"] == tuple(STAGE_PLANS)
    assert {name for plan in STAGE_PLANS.values() for name in plan} | {SCORES_STAGE} == set(STAGES)
    schema = OmegaConf.structured(BehaviorLMConfig)
    for name, stage in STAGES.items():
        assert stage.name == name and stage.kind in ("tuning", "selection", "scores")
        if stage.kind == "tuning":
            assert stage.trains_on in ("anchors", "all", "selection") and stage.train_section in schema.train
        if stage.kind == "selection":
            assert stage.picks in ("difficulty", "random", "tail")
        for path in stage.ignores:  # an ignore names a real config path
            assert OmegaConf.select(schema, path, default="absent") != "absent", (name, path)
    assert set(TRAIN_SECTIONS) == {"a_tuning", "b_tuning"} and set(TUNING_STAGES) == {"a_tuning", "joint_tuning",
                                                                                      "b_tuning"}


def test_stage_positions_are_found_by_what_the_stage_does():
    assert first_index("progressive", trains_on="anchors") == 0
    assert first_index("progressive", trains_on="selection") == 2
    assert first_index("tail_first", trains_on="anchors") == 2
    assert first_index("joint", trains_on="anchors") is None and first_index("zero_shot", kind="tuning") is None
