from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from sap_core.adapters import load_adapter, merge_adapter, save_adapter
from sap_core.config import LoraSpec
from sap_core.data import collate, encode_chat
from sap_core.modeling import attach_lora, build_tiny_llama
from tests.sap_core.conftest import make_chats


def _trained_lora() -> tuple[torch.nn.Module, object]:
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    model = attach_lora(model, LoraSpec())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)  # make the adapter matter
    model.eval()
    return model, tok


def test_round_trip_same_logits_and_exact_files(tmp_path: Path) -> None:
    model, tok = _trained_lora()
    out = save_adapter(model, tmp_path / "a", base_model_name="tiny-llama")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    reloaded = load_adapter(build_tiny_llama(0)[0], out)
    batch = collate([encode_chat(tok, make_chats(1)[0], 64)], tok.pad_token_id)
    base_logits = build_tiny_llama(0)[0](**batch).logits
    with torch.no_grad():
        want, got = model(**batch).logits, reloaded(**batch).logits
    assert torch.allclose(want, got, atol=1e-6)
    assert not torch.allclose(want, base_logits, atol=1e-3)  # the adapter is not a no-op


def test_merge_export_matches(tmp_path: Path) -> None:
    model, tok = _trained_lora()
    out = merge_adapter(model, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    batch = collate([encode_chat(tok, make_chats(1)[0], 64)], tok.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, merged(**batch).logits, atol=1e-5)
    assert any("lora" in n for n, _ in model.named_parameters())  # the original stays a PeftModel
