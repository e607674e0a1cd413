"""The one definition of what the supervisor and the training child say to each other.

The supervisor writes `JOB_DIR/request.json` (`ChildRequest`); the child answers with one JSON object
per line on stdout, `{"event": KIND, ...fields}`, one dataclass below per KIND. Both sides encode and
decode through this module, so a field cannot drift on one side only: decoding checks every field's
presence and type and refuses unknown kinds and fields with a `ProtocolError`, never a default.
Numbers travel as strict JSON (`worker.finite_json`): NaN/inf arrive as null, so a non-finite value
in a field that may not be null is a protocol error too. `python -m worker.child_protocol` prints the
protocol section of docs/ARCHITECTURE.md (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from worker import finite_json

REQUEST_FILE = "request.json"
Stage = Literal["loading", "screening", "preparing_guard", "training", "selecting", "saving", "evaluating"]


class ProtocolError(ValueError):
    """A request or event that does not follow this protocol (the message names the field)."""


@dataclass(frozen=True)
class ChildRequest:
    """Everything the child needs; it never reads the database."""

    job_id: str
    base_model: str  # registered model name, looked up in model_cache
    model_cache: str
    device: Literal["auto", "cpu", "cuda"]
    # The evaluation options the supervisor resolved for the device (worker.spec_mapping), so both
    # sides compute the same base-eval cache keys; None: the child resolves them for its own device.
    evaluation: dict[str, Any] | None
    spec: dict[str, Any]  # the job's JobSpec as stored
    guard: str
    train_path: str
    val_path: str | None
    eval_prompts_path: str | None
    resume_from: str | None  # an unzipped checkpoint folder
    checkpoint_dir: str
    output_dir: str
    base_eval_cache: dict[str, Any]  # only the entries this job looks up (worker.base_eval_keys)
    eval_engine: Literal["auto", "transformers", "vllm"]  # sap_core.generation_engines.select_engine


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str]


@dataclass(frozen=True)
class StageEvent(Event):
    """The child entered a stage (the job's `stage` column; "evaluating" also sets its status)."""

    kind: ClassVar[str] = "stage"
    stage: Stage


@dataclass(frozen=True)
class ScreeningEvent(Event):
    """The harmful-content screen of the training data (stored as a job event)."""

    kind: ClassVar[str] = "screening"
    n_examples: int
    flagged_lines: list[int]
    flagged_scores: list[float]
    flagged_share: float
    threshold: float


@dataclass(frozen=True)
class PlanEvent(Event):
    """Sent once, before the first step: the job's total_steps."""

    kind: ClassVar[str] = "plan"
    total_steps: int
    num_examples: int
    world_size: int


@dataclass(frozen=True)
class StageProgressEvent(Event):
    """A long stage's units done of total and ETA (the job's `stage_progress`; an event each tenth)."""

    kind: ClassVar[str] = "stage_progress"
    stage: Stage
    unit: str
    done: int
    total: int
    eta_s: float | None  # None until the first unit is done


@dataclass(frozen=True)
class StepEvent(Event):
    """One optimizer step; a null loss (NaN/inf) fails the job with `training_diverged`."""

    kind: ClassVar[str] = "step"
    step: int
    total_steps: int
    loss: float | None
    lr: float | None
    tokens_per_second: float | None
    elapsed_seconds: float | None  # since this attempt's training began


@dataclass(frozen=True)
class EvalEvent(Event):
    """A validation loss, sent before the step it belongs to."""

    kind: ClassVar[str] = "eval"
    step: int
    val_loss: float | None


@dataclass(frozen=True)
class CheckpointEvent(Event):
    """A checkpoint folder (adapter + resume state) the supervisor stores in the database."""

    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    train_loss: float | None
    val_loss: float | None


@dataclass(frozen=True)
class SelectionEvent(Event):
    """Post-hoc selection progress: candidates scored so far."""

    kind: ClassVar[str] = "selection"
    candidates_scored: int


@dataclass(frozen=True)
class BaseEvalEvent(Event):
    """A base-model evaluation the cache did not have; the supervisor caches it."""

    kind: ClassVar[str] = "base_eval"
    key: str
    scope: Literal["shared", "tenant"]  # "tenant": the job's own prompt set, kept with its tenant
    base_model: str
    result: dict[str, Any]  # sap_core ModelEval.to_dict()


@dataclass(frozen=True)
class StoppedEvent(Event):
    """The child obeyed the STOP file (cancel or shutdown) and exits without a result."""

    kind: ClassVar[str] = "stopped"
    step: int


@dataclass(frozen=True)
class DoneEvent(Event):
    """The result: the exit code is 0 only after this event."""

    kind: ClassVar[str] = "done"
    adapter_dir: str
    report_path: str


@dataclass(frozen=True)
class ErrorEvent(Event):
    """The failure: `code` is an ErrorCode's machine code (an unknown one reads as training_failed)."""

    kind: ClassVar[str] = "error"
    code: str
    message: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        StageEvent,
        ScreeningEvent,
        PlanEvent,
        StageProgressEvent,
        StepEvent,
        EvalEvent,
        CheckpointEvent,
        SelectionEvent,
        BaseEvalEvent,
        StoppedEvent,
        DoneEvent,
        ErrorEvent,
    )
}


def _checked(value: Any, hint: Any, where: str) -> Any:
    """`value` as `hint` (an int where a float is due becomes a float), or a ProtocolError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _checked(value, inner, where)
    if origin is Literal:
        if value not in args:
            raise ProtocolError(f"{where} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list, got {_shown(value)}")
        return [_checked(item, args[0], f"{where}[{i}]") for i, item in enumerate(value)]
    expected = origin or hint
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise ProtocolError(f"{where} must be {_type_name(hint)}, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    return (
        "null (non-finite numbers arrive as null)" if value is None else f"{type(value).__name__} {value!r}"
    )


def _build(cls: type[Any], data: dict[str, Any], what: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in data]
    unknown = sorted(set(data) - set(names))
    if missing or unknown:
        problems = [f"missing field(s) {', '.join(missing)}"] if missing else []
        problems += [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
        raise ProtocolError(f"{what}: {'; '.join(problems)}")
    return cls(**{n: _checked(data[n], hints[n], f"{what}.{n}") for n in names})


def fields_of(message: Event | ChildRequest) -> dict[str, Any]:
    """The message's fields as a dict (an event without its kind: a job event's `data`)."""
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}


def encode_event(event: Event) -> str:
    """One line of the event stream (without the newline)."""
    return finite_json.dumps({"event": event.kind, **fields_of(event)})


def decode_event(data: dict[str, Any]) -> Event:
    """The event a decoded JSON object stands for; ProtocolError for an unknown kind or a bad field."""
    body = dict(data)
    kind = body.pop("event", None)
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown event kind {kind!r} (known: {', '.join(EVENT_TYPES)})")
    event: Event = _build(cls, body, f"{kind} event")
    return event


def parse_event_line(line: str) -> Event | None:
    """The event on one stdout line; None for a line that is not a JSON object (stray output,
    logged and skipped as before); ProtocolError for an object that is not a valid event."""
    try:
        data = finite_json.loads(line)
    except ValueError:
        return None
    return decode_event(data) if isinstance(data, dict) else None


def write_request(job_dir: Path, request: ChildRequest) -> None:
    (job_dir / REQUEST_FILE).write_text(finite_json.dumps(fields_of(request)))


def read_request(job_dir: Path) -> ChildRequest:
    try:
        data = finite_json.loads((job_dir / REQUEST_FILE).read_text())
    except ValueError as exc:
        raise ProtocolError(f"{REQUEST_FILE} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{REQUEST_FILE} must hold a JSON object")
    request: ChildRequest = _build(ChildRequest, data, REQUEST_FILE)
    return request


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return "|".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is Literal:
        return "|".join(json.dumps(a) for a in args)
    if origin is list:
        return f"[{_type_name(args[0])}]"
    return {dict: "object", str: "str", int: "int", float: "float"}.get(origin or hint, str(hint))


def _shape(cls: type[Any], prefix: dict[str, str]) -> str:
    parts = [f'"{k}": {v}' for k, v in prefix.items()]
    parts += [f'"{n}": {_type_name(h)}' for n, h in typing.get_type_hints(cls).items() if n != "kind"]
    return "`{" + ", ".join(parts) + "}`"


def describe() -> str:
    """The protocol as markdown, for docs/ARCHITECTURE.md."""
    lines = [f"- `{REQUEST_FILE}`: {_shape(ChildRequest, {})}"]
    for kind, cls in EVENT_TYPES.items():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"- {_shape(cls, {'event': json.dumps(kind)})}: {summary}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(describe(), end="")
