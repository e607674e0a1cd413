from __future__ import annotations

import torch
from torch import nn

from sap_core.config import EmaConfig, LoraSpec, TrainConfig
from sap_core.ema import ParamEma
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.train import finetune
from tests.sap_core.conftest import make_chats


def _trajectory(decay: float, steps: int = 5) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    theta0 = layer.weight.detach().clone()
    ema = ParamEma(layer, decay)
    thetas = []
    for _ in range(steps):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        thetas.append(layer.weight.detach().clone())
        ema.update()
    return theta0, thetas, ema.shadow[0]


def test_closed_form_on_toy() -> None:
    lam = 0.7
    theta0, thetas, shadow = _trajectory(lam)
    T = len(thetas)
    closed = lam**T * theta0 + (1 - lam) * sum(lam ** (T - t) * th for t, th in enumerate(thetas, start=1))
    assert torch.allclose(shadow, closed, atol=1e-6)


def test_decay_one_keeps_start_and_zero_tracks_last() -> None:
    theta0, _, shadow = _trajectory(1.0)
    assert torch.equal(shadow, theta0)
    _, thetas, shadow = _trajectory(0.0)
    assert torch.equal(shadow, thetas[-1])


def test_swapped_in_restores_live_weights() -> None:
    layer = nn.Linear(2, 2)
    ema = ParamEma(layer, 0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    live = layer.weight.detach().clone()
    ema.update()
    with ema.swapped_in():
        assert torch.allclose(layer.weight, live - 0.5)
    assert torch.equal(layer.weight, live)


def test_finetune_exports_ema_weights() -> None:
    """decay=1 in a real run: the exported (returned) adapter equals the starting adapter."""
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    model = attach_lora(model, LoraSpec())
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = TrainConfig(guard="ema", max_steps=3, batch_size=4, max_seq_len=64, ema=EmaConfig(decay=1.0))
    result = finetune(model, tok, make_chats(12), cfg)
    assert result.steps_done == 3
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters() if p.requires_grad)
