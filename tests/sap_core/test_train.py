from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sap_core.config import LoraSpec, SapConfig, TrainConfig
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.train import StepState, TrainingCallback, evaluation_loss, finetune, lr_factor
from tests.sap_core.conftest import make_anchor_set, make_chats, make_triples


def _model() -> tuple[torch.nn.Module, object]:
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    return attach_lora(model, LoraSpec(dropout=0.1)), tok


def _cfg(**kw: object) -> TrainConfig:
    base: dict = {"max_steps": 4, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


class Recorder(TrainingCallback):
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[StepState] = []
        self.evals: list[tuple[int, float]] = []
        self.checkpoints: list[Path] = []
        self.stop_at = stop_at

    def on_step_end(self, state: StepState) -> str | None:
        self.steps.append(state)
        return "stop" if state.step == self.stop_at else None

    def on_evaluate(self, state: StepState, val_loss: float) -> None:
        self.evals.append((state.step, val_loss))

    def on_checkpoint(self, state: StepState, checkpoint_dir: Path) -> None:
        self.checkpoints.append(checkpoint_dir)


def test_lora_changes_and_base_does_not() -> None:
    model, tok = _model()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = _trainable(model)
    finetune(model, tok, make_chats(12), _cfg(guard="sap"), contrastive=make_triples())
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if not p.requires_grad)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)


@pytest.mark.parametrize("guard", ["none", "sap"])
def test_deterministic_with_seed(guard: str) -> None:
    runs = []
    for _ in range(2):
        model, tok = _model()
        result = finetune(model, tok, make_chats(12), _cfg(guard=guard), contrastive=make_triples())
        runs.append((result.losses, _trainable(model)))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][n], runs[1][1][n]) for n in runs[0][1])


@pytest.mark.parametrize(
    ("guard", "sap"),
    [
        ("sap", SapConfig(refresh_every=3)),
        ("sap", SapConfig(lagged_probe=True)),
        ("ema", SapConfig()),
        ("anchor", SapConfig()),
        ("constrained", SapConfig()),
        ("anchor+constrained", SapConfig()),
        ("sap+anchor", SapConfig(refresh_every=2)),
    ],
)
def test_resume_equals_uninterrupted(tmp_path: Path, guard: str, sap: SapConfig) -> None:
    cfg = _cfg(guard=guard, max_steps=5, checkpoint_every=2, grad_accum=2, batch_size=3, sap=sap)
    data, triples = make_chats(15), make_triples()
    anchors = make_anchor_set()
    model, tok = _model()
    full = finetune(
        model, tok, data, cfg, contrastive=triples, anchor_set=anchors, checkpoint_dir=tmp_path / "a"
    )
    want = _trainable(model)

    model, tok = _model()
    rec = Recorder(stop_at=3)
    finetune(
        model,
        tok,
        data,
        cfg,
        contrastive=triples,
        anchor_set=anchors,
        checkpoint_dir=tmp_path / "b",
        callbacks=[rec],
    )
    assert [p.name for p in rec.checkpoints] == ["step-2"]
    assert sorted(f.name for f in rec.checkpoints[0].iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "trainer_state.pt",
    ]
    model, tok = _model()  # a fresh process would rebuild the model like this
    resumed = finetune(
        model,
        tok,
        data,
        cfg,
        contrastive=triples,
        anchor_set=anchors,
        checkpoint_dir=tmp_path / "c",
        resume_from=rec.checkpoints[0],
    )
    assert resumed.losses == full.losses and resumed.steps_done == 5
    got = _trainable(model)
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_cancel_stops_within_one_step() -> None:
    model, tok = _model()
    rec = Recorder(stop_at=2)
    result = finetune(model, tok, make_chats(40), _cfg(max_steps=10, guard="none"), callbacks=[rec])
    assert result.stopped and result.steps_done == 2
    assert [s.step for s in rec.steps] == [1, 2]


def test_validation_best_step_and_step_state() -> None:
    model, tok = _model()
    rec = Recorder()
    val = make_chats(4)
    result = finetune(
        model, tok, make_chats(16), _cfg(max_steps=4, eval_every=2, guard="none"), val=val, callbacks=[rec]
    )
    assert [s for s, _ in rec.evals] == [2, 4] and set(result.val_losses) == {2, 4}
    assert result.best_step == min(result.val_losses, key=result.val_losses.get)
    assert result.val_losses[4] == pytest.approx(evaluation_loss(model, tok, val, 64, 4), abs=1e-6)
    s = rec.steps[-1]
    assert s.total_steps == 4 and s.tokens_per_second > 0 and s.elapsed_seconds > 0 and s.learning_rate > 0


def test_evaluation_loss_learns_on_repeated_data() -> None:
    model, tok = _model()
    data = make_chats(8)
    before = evaluation_loss(model, tok, data, 64, 4)
    finetune(model, tok, data, _cfg(max_steps=15, guard="none", learning_rate=3e-2))
    assert evaluation_loss(model, tok, data, 64, 4) < before - 0.2


def test_rows_truncated_to_no_target_are_dropped() -> None:
    model, tok = _model()
    long = [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "y"}]
    result = finetune(model, tok, [long, *make_chats(4)], _cfg(max_steps=2, guard="none"))
    assert all(loss == loss for loss in result.losses)  # no NaN
    with pytest.raises(ValueError, match="max_seq_len=64"):
        finetune(model, tok, [long], _cfg(max_steps=1, guard="none"))


def test_lr_schedule_shapes() -> None:
    assert lr_factor(0, 10, 2, "cosine") == 0.5 and lr_factor(1, 10, 2, "cosine") == 1.0
    assert lr_factor(9, 10, 0, "linear") == pytest.approx(0.1)
    assert lr_factor(5, 10, 0, "constant") == 1.0
    assert lr_factor(10, 10, 0, "cosine") == pytest.approx(0.0)


def test_step_loss_is_read_from_the_device_only_when_a_callback_asks() -> None:
    class EveryOther(TrainingCallback):
        def __init__(self) -> None:
            self.states: list[StepState] = []
            self.read: dict[int, float] = {}

        def on_step_end(self, state: StepState) -> str | None:
            self.states.append(state)
            if state.step % 2 == 0:
                self.read[state.step] = state.loss
                assert state.tokens_per_second > 0  # covers the two steps since the last read
            return None

    model, tok = _model()
    cb = EveryOther()
    result = finetune(model, tok, make_chats(12), _cfg(guard="none"), callbacks=[cb])
    # Steps nobody asked about were never synchronised: their loss is still a device tensor.
    assert all(isinstance(s._loss, torch.Tensor) for s in cb.states if s.step % 2)
    assert cb.read == {2: result.losses[1], 4: result.losses[3]}
    assert (
        all(isinstance(x, float) and x > 0 for x in result.losses) and result.final_loss == result.losses[-1]
    )
