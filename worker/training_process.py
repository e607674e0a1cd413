"""The training child: `python -m worker.training_process JOB_DIR`.

Contract (docs/ARCHITECTURE.md): JOB_DIR/request.json in; one JSON event per line on stdout out;
the adapter and report.json written under the request's output_dir. No database, no Celery: this
process can be killed at any moment and all of its memory goes with it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import torch

from safetune.errors import ErrorCode
from sap_core.adapters import save_adapter
from sap_core.distributed import Ranks
from sap_core.modeling import attach_lora
from sap_core.screening import screen_examples
from sap_core.train import StepState, TrainingCallback, evaluation_loss, finetune
from worker import finite_json
from worker.child_datasets import read_chat_jsonl, split_validation
from worker.child_evaluation import run_safety_evaluation
from worker.child_guards import SelectionSnapshots, guard_inputs, guard_record, run_selection
from worker.child_lifecycle import STOP_FILE, exit_with_parent
from worker.child_protocol import (
    CheckpointEvent,
    DoneEvent,
    ErrorEvent,
    EvalEvent,
    Event,
    PlanEvent,
    ProtocolError,
    ScreeningEvent,
    StageEvent,
    StepEvent,
    StoppedEvent,
    encode_event,
    read_request,
)
from worker.child_ranks import join_ranks, leave_ranks
from worker.job_model import QuantizationRejected, apply_model_defaults, load_job_model
from worker.model_store import ModelUnavailable
from worker.spec_mapping import evaluation_options, train_config_from_spec

# Test-only fault injection: a worker started with this variable fails jobs whose suffix equals its
# value, at step 2. Unset in production, and a job spec alone can never turn it on. FAULT_KIND_ENV
# picks the fault: "raise" (the default), "nan" (the loss becomes NaN) or "hang" (the step never ends).
FAULT_ENV = "SAFETUNE_FAULT_SUFFIX"
FAULT_KIND_ENV = "SAFETUNE_FAULT_KIND"
FAULT_STEP = 2


class SpecRejected(Exception):
    """sap_core refused the job's configuration (its ValueError names the field)."""


class DatasetRejected(Exception):
    """The training data failed the harmful-content screen the job asked for."""


# (exception, the job's error code): the expected ways a run ends early; anything else is a bug
# (traceback in the stderr log, training_failed). A bad request.json is the supervisor's bug.
FAILURE_CODES: tuple[tuple[type[Exception], ErrorCode], ...] = (
    (DatasetRejected, ErrorCode.DATASET_HARMFUL),
    (ModelUnavailable, ErrorCode.BASE_MODEL_UNAVAILABLE),
    (SpecRejected, ErrorCode.SPEC_INVALID),
    (ProtocolError, ErrorCode.INTERNAL),
)


class EventChannel:
    """JSON lines on a private copy of stdout, so stray prints from libraries cannot corrupt them.

    In a multi-rank job only rank 0 speaks (`silent=True` for the others): the supervisor reads one
    event stream, and every rank writes the same stdout.
    """

    def __init__(self, silent: bool = False) -> None:
        self._out: TextIO | None = None if silent else os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)  # anything else written to stdout goes to the stderr log
        sys.stdout = sys.stderr

    def emit(self, event: Event) -> None:
        if self._out is None:
            return
        self._out.write(encode_event(event) + "\n")
        self._out.flush()


class ChildCallback(TrainingCallback):
    """Reports progress and obeys the supervisor's STOP file between steps."""

    def __init__(
        self, events: EventChannel, job_dir: Path, suffix: str | None, num_examples: int, world_size: int = 1
    ) -> None:
        self.events = events
        self.num_examples = num_examples
        self.world_size = world_size
        self.stop_file = job_dir / STOP_FILE
        self.planned = False
        self.stopped = False
        fault_suffix = os.environ.get(FAULT_ENV)
        self.fault_at = FAULT_STEP if fault_suffix and suffix == fault_suffix else 0
        self.fault_kind = os.environ.get(FAULT_KIND_ENV, "raise")

    def on_step_end(self, state: StepState) -> str | None:
        if not self.planned:
            self.events.emit(
                PlanEvent(
                    total_steps=state.total_steps, num_examples=self.num_examples, world_size=self.world_size
                )
            )
            self.planned = True
        faulty = bool(self.fault_at) and state.step >= self.fault_at
        self.events.emit(
            StepEvent(
                step=state.step,
                total_steps=state.total_steps,
                loss=float("nan") if faulty and self.fault_kind == "nan" else state.loss,
                lr=state.learning_rate,
                tokens_per_second=state.tokens_per_second,
                elapsed_seconds=state.elapsed_seconds,
            )
        )
        if faulty and self.fault_kind == "hang":
            time.sleep(24 * 3600)
        if faulty and self.fault_kind == "raise":
            raise RuntimeError(f"injected fault at step {state.step} ({FAULT_ENV})")
        if self.stop_file.exists():
            self.stopped = True
            return "stop"
        return None

    def on_evaluate(self, state: StepState, val_loss: float) -> None:
        self.events.emit(EvalEvent(step=state.step, val_loss=val_loss))

    def on_checkpoint(self, state: StepState, checkpoint_dir: Path) -> None:
        self.events.emit(
            CheckpointEvent(
                step=state.step, path=str(checkpoint_dir), train_loss=state.loss, val_loss=state.val_loss
            )
        )


def _screen(train: list[list[dict[str, str]]], spec: dict[str, Any], events: EventChannel) -> dict[str, Any]:
    """Score the training data for harmful examples; reject it if the job set a limit it exceeds."""
    events.emit(StageEvent(stage="screening"))
    result = screen_examples(train).to_dict()
    events.emit(ScreeningEvent(**result))
    limit = (spec.get("screening") or {}).get("reject_harmful_share")
    if limit is not None and result["flagged_share"] > limit:
        lines = ", ".join(str(n) for n in result["flagged_lines"][:20])
        raise DatasetRejected(
            f"{result['flagged_share']:.1%} of training examples look harmful (limit {limit:.1%}); "
            f"lines {lines}"
        )
    return result


def run(job_dir: Path, events: EventChannel, ranks: Ranks = Ranks(), device: str | None = None) -> None:
    request = read_request(job_dir)
    spec = request.spec
    try:
        config = train_config_from_spec(spec, request.guard)
    except ValueError as exc:
        raise SpecRejected(str(exc)) from exc
    events.emit(StageEvent(stage="loading"))
    quantization = spec.get("hyperparameters", {}).get("quantization")
    try:
        job_model = load_job_model(request.base_model, Path(request.model_cache), device, quantization)
    except QuantizationRejected as exc:  # e.g. no bitsandbytes here
        raise SpecRejected(str(exc)) from exc
    model, tokenizer, model_dir = job_model.model, job_model.tokenizer, job_model.model_dir
    config = apply_model_defaults(config, spec, job_model)
    train = read_chat_jsonl(request.train_path)
    val = read_chat_jsonl(request.val_path)
    if not val:
        train, val = split_validation(train, float(spec.get("validation_split") or 0.0), config.seed)
    screening = _screen(train, spec, events)
    # The adapter's random init follows the job's seed (torch seeds each process at random): the
    # same spec trains the same adapter, however many ranks train it.
    torch.manual_seed(config.seed)
    peft_model = attach_lora(model, config.lora)
    # Utility is measured on the user's validation data, or on the training data when there is none.
    utility_set = val or train
    with peft_model.disable_adapter():
        loss_before = evaluation_loss(
            peft_model, tokenizer, utility_set, config.max_seq_len, config.batch_size
        )

    events.emit(StageEvent(stage="preparing_guard"))
    triples, anchors = guard_inputs(peft_model, tokenizer, config, request.base_model, model_dir)
    events.emit(StageEvent(stage="training"))
    callback = ChildCallback(events, job_dir, spec.get("suffix"), len(train), ranks.world_size)
    selection = spec.get("selection") or {}
    snapshots = SelectionSnapshots(peft_model, int(selection.get("snapshots", 3)))
    result = finetune(
        peft_model,
        tokenizer,
        train,
        config,
        val=val or None,
        contrastive=triples,
        anchor_set=anchors,
        callbacks=[callback, snapshots] if selection.get("enabled") else [callback],
        checkpoint_dir=Path(request.checkpoint_dir) if config.checkpoint_every else None,
        resume_from=Path(request.resume_from) if request.resume_from else None,
    )
    if callback.stopped:
        events.emit(StoppedEvent(step=result.steps_done))
        return
    if not ranks.is_main:
        return  # rank 0 alone saves, evaluates and reports; the weights are the same on every rank

    picked = None
    if selection.get("enabled"):
        events.emit(StageEvent(stage="selecting"))
        picked = run_selection(
            peft_model,
            tokenizer,
            snapshots.states,
            result.steps_done,
            selection,
            utility_set,
            config,
            events.emit,
        )
    events.emit(StageEvent(stage="saving"))
    output = Path(request.output_dir)
    adapter_dir = save_adapter(
        peft_model, output / "adapter", base_model_name=request.base_model, tokenizer=tokenizer
    )
    loss_after = evaluation_loss(peft_model, tokenizer, utility_set, config.max_seq_len, config.batch_size)

    events.emit(StageEvent(stage="evaluating"))
    report = run_safety_evaluation(
        peft_model,
        tokenizer,
        request=request,
        config=config,
        # The supervisor resolved the options (worker.pipeline); a request with none (written by
        # hand) gets the default for the device the model is on.
        options=request.evaluation
        if request.evaluation is not None
        else evaluation_options(spec, "cuda" if next(peft_model.parameters()).is_cuda else "cpu"),
        screening=screening,
        utility={
            "loss_set": "validation" if val else "training",
            "val_loss_before": loss_before,  # the keys sap_core.report's utility check reads
            "val_loss_after": loss_after,
            "val_losses": result.val_losses,
            "best_step": result.best_step,
            "steps_done": result.steps_done,
            "final_train_loss": result.final_loss,
        },
        emit=events.emit,
        base_dir=model_dir,
        adapter_dir=adapter_dir,
    )
    report["guard"] = guard_record(config, result.guard_settings)
    report["chat_template"] = job_model.chat_template
    if picked is not None:
        report["selection"] = picked.to_dict()
    report_path = output / "report.json"
    report_path.write_text(finite_json.dumps(report))
    events.emit(DoneEvent(adapter_dir=str(adapter_dir), report_path=str(report_path)))


def _failure(exc: Exception) -> ErrorEvent:
    """The error event for what ended the run."""
    for kind, code in FAILURE_CODES:
        if isinstance(exc, kind):
            return ErrorEvent(code=code.code, message=str(exc))
    traceback.print_exc()
    return ErrorEvent(code=ErrorCode.TRAINING_FAILED.code, message=f"{type(exc).__name__}: {exc}")


def main(argv: list[str]) -> int:
    exit_with_parent()
    job_dir = Path(argv[1])
    try:
        setting = read_request(job_dir).device
    except ProtocolError:
        setting = "auto"  # run() reads it again and reports what is wrong with it
    ranks, device = join_ranks(None if setting == "auto" else setting)
    events = EventChannel(silent=not ranks.is_main)
    try:
        run(job_dir, events, ranks, device)
    except Exception as exc:
        events.emit(_failure(exc))
        return 1
    finally:
        leave_ranks()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
