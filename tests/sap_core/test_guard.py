from __future__ import annotations

import math

import torch

from sap_core.adapters import load_adapter, save_adapter
from sap_core.config import LoraSpec, SapConfig, TrainConfig
from sap_core.data import collate, encode_chat
from sap_core.guard import SapGuard, decoder_layers, default_probe_layers
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.train import finetune
from tests.sap_core.conftest import make_chats, make_triples


def _lora(seed: int = 0, dropout: float = 0.0) -> tuple[torch.nn.Module, object]:
    model, tok = build_tiny_llama(seed)
    torch.manual_seed(seed)
    return attach_lora(model, LoraSpec(dropout=dropout)), tok


def _cos_update_vs_direction(guard: str, probe_step: float = 0.05) -> float:
    """cos(θ_after − θ_before, ĝ) after one step of training on the harmful completions."""
    triples = make_triples(4)
    train = [
        [{"role": "user", "content": t.prompt}, {"role": "assistant", "content": t.harmful}] for t in triples
    ]
    model, tok = _lora()
    direction = SapGuard(model, tok, triples, SapConfig(), 128).refresh_direction()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    cfg = TrainConfig(
        guard=guard,  # type: ignore[arg-type]
        max_steps=1,
        batch_size=8,
        max_seq_len=128,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lr_schedule="constant",
        max_grad_norm=0.0,
        lora=LoraSpec(dropout=0.0),
        sap=SapConfig(probe_step=probe_step, radius=0.05),
    )
    finetune(model, tok, train * 2, cfg, contrastive=triples)
    delta = [p.detach() - b for p, b in zip(params, before, strict=True)]
    dot = sum(float((d * g).sum()) for d, g in zip(delta, direction, strict=True))
    return dot / math.sqrt(sum(float(d.pow(2).sum()) for d in delta))


def test_sap_lowers_cosine_between_update_and_harmful_direction() -> None:
    plain = _cos_update_vs_direction("none")
    guarded = _cos_update_vs_direction("sap")
    assert plain > 0.05  # the constructed task (harmful completions) does push along ĝ
    assert guarded < plain * 0.6


def test_direction_is_unit_norm_and_lora_only(tiny: tuple) -> None:
    model, tok = _lora()
    guard = SapGuard(model, tok, make_triples(), SapConfig(), 128)
    d = guard.refresh_direction()
    assert len(d) == len([p for p in model.parameters() if p.requires_grad])
    assert abs(math.sqrt(sum(float(x.pow(2).sum()) for x in d)) - 1.0) < 1e-5
    assert all(p.grad is None for p in model.parameters())  # the direction never touches .grad


def test_weights_restored_exactly_after_perturbation() -> None:
    model, tok = _lora()
    guard = SapGuard(model, tok, make_triples(), SapConfig(radius=0.3), 128)
    direction = guard.refresh_direction()
    before = [p.detach().clone() for p in guard.params]
    with guard.perturbed(direction) as scale:
        assert scale > 0
        assert any(not torch.equal(p, b) for p, b in zip(guard.params, before, strict=True))
    assert all(torch.equal(p, b) for p, b in zip(guard.params, before, strict=True))


def test_probe_hooks_change_outputs_only_inside_context(tiny: tuple) -> None:
    model, tok = _lora()
    guard = SapGuard(model, tok, make_triples(), SapConfig(), 128)
    batch = collate([encode_chat(tok, make_chats(1)[0], 128)], tok.pad_token_id)
    with torch.no_grad():
        clean = model(**batch).logits
        probe = [torch.full((guard.hidden_size,), 0.5) for _ in guard.probe_layers]
        with guard.probe_inserted(probe):
            assert guard.has_hooks()
            probed = model(**batch).logits
        after = model(**batch).logits
    assert not torch.allclose(clean, probed)
    assert torch.equal(clean, after) and not guard.has_hooks()


def test_probe_absent_from_export(tmp_path: object) -> None:
    model, tok = _lora(dropout=0.1)
    cfg = TrainConfig(guard="sap", max_steps=3, batch_size=4, max_seq_len=64, sap=SapConfig(probe_step=0.5))
    finetune(model, tok, make_chats(12), cfg, contrastive=make_triples())
    layers = decoder_layers(model)
    assert all(len(layer._forward_hooks) == 0 for layer in layers)
    out = save_adapter(model, tmp_path / "adapter")  # type: ignore[operator]
    reloaded = load_adapter(build_tiny_llama(0)[0], out)
    batch = collate([encode_chat(tok, make_chats(2)[1], 64)], tok.pad_token_id)
    with torch.no_grad():
        # Same logits from the live model and from base + saved LoRA alone => no probe anywhere.
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-6)


def test_default_probe_layers_are_a_middle_band() -> None:
    assert default_probe_layers(30) == tuple(range(10, 20))
    assert default_probe_layers(4) == (1,)
    assert default_probe_layers(1) == (0,)


def test_pass_counts_paper_vs_lagged() -> None:
    """Paper ordering: 3 forwards per cached step (2 probe + outer); lagged: 2 (outer + perturbed)."""
    counts = {}
    for lagged in (False, True):
        model, tok = _lora()
        calls = [0]
        model.get_base_model().model.register_forward_pre_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        cfg = TrainConfig(
            guard="sap",
            max_steps=3,
            batch_size=8,
            max_seq_len=64,
            sap=SapConfig(refresh_every=8, lagged_probe=lagged),
        )
        finetune(model, tok, make_chats(24), cfg, contrastive=make_triples())
        counts[lagged] = calls[0]
    assert counts[False] == 1 + 3 * 3  # one direction refresh + 3 steps x 3 passes
    assert counts[True] == 1 + 3 * 2
