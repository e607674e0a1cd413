from __future__ import annotations

import torch

from bench.safety_frontier import SnapshotRecorder
from sap_core.config import LoraSpec, TrainConfig
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.train import finetune
from tests.sap_core.conftest import make_chats


def _run(stop_at: float | None) -> SnapshotRecorder:
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    cfg = TrainConfig(
        guard="none", max_steps=12, batch_size=4, max_seq_len=64, learning_rate=5e-3, eval_every=2
    )
    recorder = SnapshotRecorder(peft, stop_at)
    chats = make_chats(12)
    finetune(peft, tok, chats[4:], cfg, val=chats[:4], callbacks=[recorder])
    return recorder


def test_stop_at_match_ends_at_the_first_checkpoint_at_or_below_the_target_changing_nothing_before() -> None:
    full = _run(None)
    losses = [v for _, v, _ in full.snapshots]
    assert [s for s, _, _ in full.snapshots] == [2, 4, 6, 8, 10, 12]
    assert losses[2] < losses[0]  # the tiny model does learn, so a target between them exists
    target = (losses[1] + losses[2]) / 2 if losses[2] < losses[1] else losses[2]
    first = next(i for i, v in enumerate(losses) if v <= target)
    stopped = _run(target)
    assert [s for s, _, _ in stopped.snapshots] == [s for s, _, _ in full.snapshots[: first + 1]]
    for (_, v_full, w_full), (_, v_stop, w_stop) in zip(full.snapshots, stopped.snapshots, strict=False):
        assert v_full == v_stop
        assert all(torch.equal(w_full[k], w_stop[k]) for k in w_full)
    assert stopped.bracket(target) == stopped.snapshots[-2:]
