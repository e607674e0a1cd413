from __future__ import annotations

import torch

from sap_core.config import LoraSpec, TrainConfig
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.selection import load_scaled, select_checkpoint, trainable_state
from sap_core.train import StepState, TrainingCallback, evaluation_loss, finetune
from tests.sap_core.conftest import make_chats


class Snapshots(TrainingCallback):
    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.states = model, {}

    def on_evaluate(self, state: StepState, val_loss: float) -> None:
        self.states[state.step] = trainable_state(self.model)


def _trained() -> tuple[torch.nn.Module, object, dict, list]:
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    data, val = make_chats(16), make_chats(24)[16:]
    snaps = Snapshots(peft)
    cfg = TrainConfig(
        guard="none", max_steps=6, batch_size=4, max_seq_len=64, learning_rate=3e-2, eval_every=2
    )
    finetune(peft, tok, data, cfg, val=val, callbacks=[snaps])
    return peft, tok, snaps.states, val


def test_selection_never_picks_a_point_outside_the_utility_budget() -> None:
    peft, tok, states, val = _trained()

    def loss(m: torch.nn.Module) -> float:
        return evaluation_loss(m, tok, val, 64, 8)

    # A "safety" that prefers whatever is closest to the base: the smallest adapter norm.
    def closeness(m: torch.nn.Module) -> tuple[float, float]:
        norm = sum(float(p.detach().pow(2).sum()) for n, p in m.named_parameters() if "lora_B" in n)
        return norm, 0.0

    result = select_checkpoint(peft, states, [0.9, 0.5, 0.1], 0.02, loss, closeness)
    outside = [c for c in result.candidates if not c.within_budget]
    assert outside, "the budget must exclude something for this test to mean anything"
    assert result.picked.within_budget
    assert result.picked.val_loss <= result.reference_val_loss * 1.02
    # An out-of-budget point was closer to the base (it would have won without the budget).
    load_scaled(peft, states[min(states)], 0.1)
    assert closeness(peft)[0] < (result.picked.harmful_score or 0.0)
    # The model holds the picked weights, and the reason names the pick.
    load_scaled(peft, states[result.picked.step], result.picked.scale)
    assert abs(loss(peft) - result.picked.val_loss) < 1e-6
    assert "budget" in result.reason or "final adapter" in result.reason


def test_zero_budget_keeps_the_final_adapter_or_an_equally_good_one() -> None:
    peft, tok, states, val = _trained()
    result = select_checkpoint(
        peft, states, [0.5], 0.0, lambda m: evaluation_loss(m, tok, val, 64, 8), lambda m: (0.5, 0.5)
    )
    assert result.picked.val_loss <= result.reference_val_loss
    assert result.to_dict()["picked"]["step"] == result.picked.step
