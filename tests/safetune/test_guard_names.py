from __future__ import annotations

import json
from pathlib import Path

import pytest

from safetune import schemas
from sap_core import config

FRONTIER = Path(__file__).resolve().parents[2] / "bench" / "results" / "safety_frontier.json"


def test_the_api_and_sap_core_know_the_same_guards_and_default() -> None:
    assert sorted(g.value for g in schemas.Guard) == sorted(config.GUARD_NAMES)
    assert schemas.DEFAULT_GUARD == config.DEFAULT_GUARD == config.TrainConfig().guard
    assert schemas.JobSpec(base_model="tiny-random-llama").guard == config.DEFAULT_GUARD


def test_the_default_guard_is_the_one_the_frontier_bench_recorded() -> None:
    assert json.loads(FRONTIER.read_text())["default_guard"] == config.DEFAULT_GUARD


@pytest.mark.parametrize(
    ("given", "stored"),
    [("anchor+constrained", "anchor+constrained"), (["sap", "anchor"], "sap+anchor"), ("none", "none")],
)
def test_composed_guards_normalise(given: object, stored: str) -> None:
    assert schemas.normalize_guard(given) == stored
    config.guard_parts(stored)  # sap_core accepts what the API stores


@pytest.mark.parametrize("bad", ["anchor+anchor", "none+sap", "shield", ["sap", "nope"], 3])
def test_bad_guards_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        schemas.normalize_guard(bad)


def test_the_api_and_sap_core_default_to_the_same_evaluation_batch() -> None:
    from sap_core.safety_eval import EVAL_BATCH_SIZE, EvalConfig

    assert schemas.EvaluationOptions().batch_size == EVAL_BATCH_SIZE == EvalConfig().batch_size


def test_the_api_and_sap_core_default_to_the_same_anchor_settings() -> None:
    api = schemas.AnchorOptions().model_dump()
    core = config.AnchorConfig()
    assert api == {name: getattr(core, name) for name in api}
    assert set(api) == set(vars(core))
    # The benign share defaults to a rule of the batch size, written on both sides: same result.
    for batch_size in (1, 2, 3, 5):
        resolved = schemas.AnchorOptions(batch_size=batch_size).benign_per_batch
        assert resolved == config.AnchorConfig(batch_size=batch_size).benign_per_batch
