"""Every stage declared once: what kind it is, what it trains on or picks, which training settings it uses, the config
paths it does not read (for the stage cache, each with the reason), and which stages each `stage_order` runs.

`config` reads the stage orders from here, `cache_keys` the ignores, `pipeline` what to run, `dashboard` and
`tracking` the tuning stages; a new stage is one entry below (and its runner, if it is a new kind of work).
`tests/test_stage_plan.py` checks that no other module names a stage by its string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

_SELECTION_ONLY = "read by the selection stages, after this one"
_B_ONLY = "B-Tuning's settings, read after this stage"
_UPSTREAM = "reaches this stage through its parent's key, when the stage that reads it ran before"


@dataclass(frozen=True)
class Stage:
    """A stage of a stage order.

    kind: `tuning` trains the adapter, `selection` picks the B set, `scores` is a cached sub-step of selection.
    trains_on (tuning): `anchors` (anchor samples mixed with `aux_ratio` conversations: A-Tuning), `all` (every
    training sample: plain fine-tuning) or `selection` (the B set the last selection stage picked).
    train_section (tuning): the `train.<section>` of optimiser settings it uses.
    picks (selection): `difficulty` (the A-tuned model's hardest samples), `random` (F random samples of every
    behavior) or `tail` (F random samples of each tail behavior).
    ignores: config paths the stage does not read, each with the reason (the stage cache keys on the rest).
    """

    name: str
    kind: str
    ignores: Mapping[str, str] = field(default_factory=dict)
    trains_on: Optional[str] = None
    train_section: Optional[str] = None
    picks: Optional[str] = None


STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("a_tuning", "tuning", {
        "samples_per_behavior": _SELECTION_ONLY, "selection": _SELECTION_ONLY, "train.b_tuning": _B_ONLY},
        trains_on="anchors", train_section="a_tuning"),
    Stage("joint_tuning", "tuning", {  # every training sample, with A-Tuning's optimisation settings
        "samples_per_behavior": _SELECTION_ONLY, "selection": _SELECTION_ONLY, "train.b_tuning": _B_ONLY,
        "aux_ratio": "plain fine-tuning mixes in no conversations", "aux": "plain fine-tuning mixes in no "
        "conversations"}, trains_on="all", train_section="a_tuning"),
    Stage("selection_scores", "scores", {  # the scored pool: one set of scores serves every F and contrastive
        "samples_per_behavior": "F picks from the scores; the pool's size is selection.max_scored_per_behavior",
        "selection.contrastive": "how the scores are tiered, not what they are",
        "selection.strategy": "scores exist only for strategy=difficulty",
        "selection.difficulty": "scores exist only when difficulty is on",
        "train.b_tuning": _B_ONLY}),
    Stage("difficulty_selection", "selection", {"train.b_tuning": _B_ONLY}, picks="difficulty"),
    Stage("random_balanced", "selection", {
        "train.b_tuning": _B_ONLY, "selection": "a random balanced set: no scores, no tiers"}, picks="random"),
    Stage("tail_balanced", "selection", {
        "train.b_tuning": _B_ONLY, "selection": "a random set of tail behaviors: no scores, no tiers"}, picks="tail"),
    Stage("b_tuning", "tuning", {"train.a_tuning": _UPSTREAM, "aux_ratio": _UPSTREAM, "aux": _UPSTREAM},
          trains_on="selection", train_section="b_tuning"),
)}

# stage_order -> the stages it runs, in order
STAGE_PLANS: dict[str, tuple[str, ...]] = {
    "progressive": ("a_tuning", "difficulty_selection", "b_tuning"),  # the paper's BehaviorLM
    "joint": ("joint_tuning",),  # plain fine-tuning on every training sample
    "anchor_only": ("a_tuning",),  # A-Tuning alone (the paper's anchor-only zero-shot comparison)
    "balanced_only": ("random_balanced", "b_tuning"),  # a random balanced set of all behaviors, no A-Tuning
    "balanced_first": ("random_balanced", "b_tuning", "a_tuning"),  # the reverse order on a balanced set
    "tail_first": ("tail_balanced", "b_tuning", "a_tuning"),  # paper Fig. 4: tail behaviors, then anchors
    "tail_only": ("tail_balanced", "b_tuning"),  # tail behaviors only
    "zero_shot": (),  # the pretrained model as it is
}
STAGE_ORDERS = tuple(STAGE_PLANS)
TUNING_STAGES = tuple(name for name, stage in STAGES.items() if stage.kind == "tuning")
SELECTION_STAGES = tuple(name for name, stage in STAGES.items() if stage.kind == "selection")
SCORES_STAGE = next(name for name, stage in STAGES.items() if stage.kind == "scores")
TRAIN_SECTIONS = tuple(dict.fromkeys(STAGES[name].train_section for name in TUNING_STAGES))


def plan(stage_order: str) -> list[Stage]:
    return [STAGES[name] for name in STAGE_PLANS[stage_order]]


def first_index(stage_order: str, **where: str) -> Optional[int]:
    """The position in the plan of the first stage whose fields equal `where` (trains_on="anchors"), or None."""
    for index, stage in enumerate(plan(stage_order)):
        if all(getattr(stage, key) == value for key, value in where.items()):
            return index
    return None
