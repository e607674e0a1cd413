"""The child protocol module: every request and event survives a round trip through its JSON line,
anything else is refused with a ProtocolError that names the problem, and docs/ARCHITECTURE.md
shows exactly what the module defines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from worker import child_protocol as protocol
from worker.child_protocol import ProtocolError

ROOT = Path(__file__).resolve().parents[2]

SAMPLES: dict[str, protocol.Event] = {
    "stage": protocol.StageEvent(stage="training"),
    "screening": protocol.ScreeningEvent(
        n_examples=4, flagged_lines=[2], flagged_scores=[0.91], flagged_share=0.25, threshold=0.5
    ),
    "plan": protocol.PlanEvent(total_steps=10, num_examples=32, world_size=2),
    "stage_progress": protocol.StageProgressEvent(
        stage="evaluating", unit="prompts", done=0, total=64, eta_s=None
    ),
    "step": protocol.StepEvent(
        step=3, total_steps=10, loss=1.25, lr=2e-4, tokens_per_second=812.5, elapsed_seconds=4.5
    ),
    "eval": protocol.EvalEvent(step=4, val_loss=None),
    "checkpoint": protocol.CheckpointEvent(step=5, path="/jobs/j/ckpt-5", train_loss=1.1, val_loss=1.3),
    "selection": protocol.SelectionEvent(candidates_scored=3),
    "base_eval": protocol.BaseEvalEvent(
        key="k" * 64, scope="tenant", base_model="tiny-random-llama", result={"model": "m", "rows": [1]}
    ),
    "stopped": protocol.StoppedEvent(step=6),
    "done": protocol.DoneEvent(
        adapter_dir="/jobs/j/output/adapter", report_path="/jobs/j/output/report.json"
    ),
    "error": protocol.ErrorEvent(code="dataset_harmful", message="12.5% of training examples look harmful"),
}


def request(**changes: Any) -> protocol.ChildRequest:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "base_model": "tiny-random-llama",
        "model_cache": "/models",
        "device": "cpu",
        "evaluation": {"max_prompts": 100, "max_new_tokens": 40},
        "spec": {"hyperparameters": {"learning_rate": 1e-4}, "suffix": None},
        "guard": "sap",
        "train_path": "/jobs/j/train.jsonl",
        "val_path": None,
        "eval_prompts_path": "/jobs/j/eval_prompts.jsonl",
        "resume_from": None,
        "checkpoint_dir": "/jobs/j/checkpoints",
        "output_dir": "/jobs/j/output",
        "base_eval_cache": {"k": {"model": "m"}},
        "eval_engine": "auto",
        **changes,
    }
    return protocol.ChildRequest(**fields)


def test_every_event_kind_has_a_sample() -> None:
    assert set(SAMPLES) == set(protocol.EVENT_TYPES)
    assert all(protocol.EVENT_TYPES[kind] is type(event) for kind, event in SAMPLES.items())


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_event_round_trips_through_its_line(kind: str) -> None:
    line = protocol.encode_event(SAMPLES[kind])
    assert json.loads(line)["event"] == kind
    assert protocol.parse_event_line(line + "\n") == SAMPLES[kind]


def test_the_request_round_trips_through_request_json(tmp_path: Path) -> None:
    protocol.write_request(tmp_path, request())
    assert protocol.read_request(tmp_path) == request()


def test_a_non_finite_optional_number_arrives_as_null() -> None:
    event = protocol.StepEvent(
        step=2, total_steps=3, loss=float("nan"), lr=1e-4, tokens_per_second=float("inf"), elapsed_seconds=1
    )
    decoded = protocol.parse_event_line(protocol.encode_event(event))
    assert isinstance(decoded, protocol.StepEvent)
    assert (decoded.loss, decoded.tokens_per_second, decoded.elapsed_seconds) == (None, None, 1.0)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"event": "progress", "step": 1}', "unknown event kind 'progress'"),
        ('{"step": 1}', "unknown event kind None"),
        ('{"event": "eval", "step": 1}', "eval event: missing field(s) val_loss"),
        ('{"event": "stopped", "step": 1, "why": "x"}', "stopped event: unknown field(s) why"),
        (
            '{"event": "plan", "total_steps": NaN, "num_examples": 1, "world_size": 1}',
            "plan event.total_steps must be int, got null",
        ),
        (
            '{"event": "plan", "total_steps": 2.5, "num_examples": 1, "world_size": 1}',
            "must be int, got float 2.5",
        ),
        ('{"event": "stopped", "step": true}', "stopped event.step must be int, got bool True"),
        ('{"event": "stage", "stage": "flying"}', "stage event.stage must be one of 'loading'"),
        (
            '{"event": "base_eval", "key": "k", "scope": "all", "base_model": "m", "result": {}}',
            "scope must be one of 'shared', 'tenant'",
        ),
        (
            '{"event": "screening", "n_examples": 1, "flagged_lines": [1.5], "flagged_scores": [], '
            '"flagged_share": 0, "threshold": 0.5}',
            "flagged_lines[0] must be int",
        ),
        ('{"event": "error", "code": null, "message": "m"}', "error event.code must be str, got null"),
        (
            '{"event": "stage_progress", "stage": "evaluating", "unit": "prompts", "done": 3, "total": 64}',
            "stage_progress event: missing field(s) eta_s",
        ),
    ],
)
def test_a_malformed_event_is_refused_naming_the_problem(line: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_event_line(line)
    assert problem in str(caught.value)


@pytest.mark.parametrize("line", ["loading weights...", "[1, 2]", '"step"', ""])
def test_output_that_is_not_a_json_object_is_not_an_event(line: str) -> None:
    assert protocol.parse_event_line(line) is None


def test_a_malformed_request_is_refused_naming_the_field(tmp_path: Path) -> None:
    fields = protocol.fields_of(request())
    del fields["output_dir"]
    (tmp_path / protocol.REQUEST_FILE).write_text(json.dumps({**fields, "device": "tpu"}))
    with pytest.raises(ProtocolError, match="request.json: missing field\\(s\\) output_dir"):
        protocol.read_request(tmp_path)
    (tmp_path / protocol.REQUEST_FILE).write_text(json.dumps({**fields, "output_dir": "/o", "device": "tpu"}))
    with pytest.raises(ProtocolError, match="request.json.device must be one of"):
        protocol.read_request(tmp_path)


def test_the_architecture_doc_shows_exactly_this_protocol() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    begin, end = (
        "<!-- child-protocol:begin (python -m worker.child_protocol) -->\n",
        "<!-- child-protocol:end -->",
    )
    assert begin in doc and end in doc
    shown = doc.split(begin, 1)[1].split(end, 1)[0]
    assert shown == protocol.describe(), "regenerate the block with `python -m worker.child_protocol`"
    for kind in protocol.EVENT_TYPES:
        assert f'"event": "{kind}"' in shown
