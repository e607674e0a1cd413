"""The GPU path's switches, exercised on the CPU: checkpointing, SDPA loading, the QLoRA refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sap_core.acceleration import (
    base_parameter_count,
    gradient_checkpointing_active,
    qlora_unavailable_reason,
    wants_gradient_checkpointing,
)
from sap_core.anchor import gradient_surgery, gradient_surgery_on_device
from sap_core.config import LoraSpec, TrainConfig
from sap_core.modeling import attach_lora, build_tiny_llama, load_base_model, save_tiny_llama
from sap_core.train import finetune
from tests.sap_core.conftest import make_chats, make_triples


def _cfg(**kw: object) -> TrainConfig:
    base: dict = {"max_steps": 3, "batch_size": 4, "max_seq_len": 64, "learning_rate": 1e-2}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def _peft() -> torch.nn.Module:
    model, _ = build_tiny_llama(0)
    torch.manual_seed(0)
    return attach_lora(model, LoraSpec(dropout=0.1))


def test_auto_checkpointing_turns_on_only_above_the_threshold() -> None:
    model = _peft()
    n = base_parameter_count(model)
    assert not wants_gradient_checkpointing(model, _cfg())  # 1B default >> the tiny model
    assert wants_gradient_checkpointing(model, _cfg(gradient_checkpointing_min_params=n))
    assert not wants_gradient_checkpointing(model, _cfg(gradient_checkpointing_min_params=n + 1))
    assert wants_gradient_checkpointing(model, _cfg(gradient_checkpointing="on"))
    assert not wants_gradient_checkpointing(
        model, _cfg(gradient_checkpointing="off", gradient_checkpointing_min_params=0)
    )
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        _cfg(gradient_checkpointing="sometimes")


@pytest.mark.parametrize("guard", ["none", "sap"])
def test_checkpointing_recomputes_layers_and_trains_the_same(guard: str) -> None:
    results = {}
    for mode in ("off", "on"):
        model, tok = build_tiny_llama(0)
        torch.manual_seed(0)
        peft = attach_lora(model, LoraSpec(dropout=0.1))
        calls = [0]
        inner = peft.base_model.model.model.layers[0].mlp  # inside the checkpointed forward
        inner.register_forward_pre_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        result = finetune(
            peft,
            tok,
            make_chats(12),
            _cfg(guard=guard, gradient_checkpointing=mode),
            contrastive=make_triples(),
        )
        trained = {n: p.detach().clone() for n, p in peft.named_parameters() if p.requires_grad}
        results[mode] = (result.losses, trained, calls[0], gradient_checkpointing_active(peft))
    (loss_off, w_off, calls_off, active_off), (loss_on, w_on, calls_on, active_on) = (
        results["off"],
        results["on"],
    )
    assert active_on and not active_off
    assert calls_on > calls_off  # the mlp ran again in backward: activations were recomputed
    # Recompute replays dropout and the SAP probe hooks: the same training, up to float noise.
    assert loss_on == pytest.approx(loss_off, rel=1e-5)
    assert all(torch.allclose(w_on[n], w_off[n], atol=1e-6) for n in w_off)


def test_base_model_loads_with_sdpa_attention(tmp_path: Path) -> None:
    folder = save_tiny_llama(tmp_path / "tiny")
    model, _ = load_base_model(folder, "cpu")
    assert model.config._attn_implementation == "sdpa"
    assert next(model.parameters()).dtype == torch.float32  # the CPU default stays fp32


def test_qlora_is_refused_with_a_reason_when_bitsandbytes_or_cuda_is_missing(tmp_path: Path) -> None:
    reason = qlora_unavailable_reason("cpu")
    assert reason is not None and ("bitsandbytes" in reason or "CUDA" in reason)
    folder = save_tiny_llama(tmp_path / "tiny")
    with pytest.raises(ValueError, match="quantization='4bit'"):
        load_base_model(folder, "cpu", quantization="4bit")
    with pytest.raises(ValueError, match="quantization='8bit'"):
        load_base_model(folder, "cpu", quantization="8bit")


@pytest.mark.parametrize("conflict", [True, False])
def test_on_device_gradient_surgery_matches_the_host_version(conflict: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    g_anchor = [torch.randn(5, 3, generator=gen), torch.randn(7, generator=gen)]
    g_task = [(-a if conflict else a) + 0.1 * torch.randn(a.shape, generator=gen) for a in g_anchor]
    want, want_projected = gradient_surgery(g_task, g_anchor, weight=0.5, projection=True)
    got, got_projected = gradient_surgery_on_device(g_task, g_anchor, weight=0.5, projection=True)
    assert bool(got_projected) == want_projected == conflict
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True))
    _, off = gradient_surgery_on_device(g_task, g_anchor, weight=0.5, projection=False)
    assert not bool(off)
