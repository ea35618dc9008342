"""One stage vocabulary: secagg's ``Stage`` names every stage list of the other layers."""

from __future__ import annotations

import dataclasses

from securefl.fl.aggregation import STAGES
from securefl.fl.secure import SECAGG_STAGES
from securefl.secagg import STAGE_LABELS, DropoutPlan, Stage


def test_stage_labels_follow_the_enum_in_protocol_order() -> None:
    assert tuple(s.name.lower() for s in sorted(Stage)) == STAGE_LABELS
    assert [Stage[label.upper()].label for label in STAGE_LABELS] == list(STAGE_LABELS)


def test_dropout_plan_has_one_field_per_stage() -> None:
    assert tuple(f.name for f in dataclasses.fields(DropoutPlan)) == STAGE_LABELS
    plan = DropoutPlan.from_mapping({s: {int(s) + 1} for s in Stage})
    assert all(plan.at(s) == {int(s) + 1} for s in Stage)


def test_fl_stage_lists_are_the_secagg_stages() -> None:
    assert STAGES == SECAGG_STAGES == STAGE_LABELS
