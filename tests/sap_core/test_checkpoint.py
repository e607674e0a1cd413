from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sap_core.checkpoint import STATE_FILE, load_checkpoint, save_checkpoint
from sap_core.config import LoraSpec
from sap_core.modeling import attach_lora, build_tiny_llama


def test_atomic_write_and_load(tmp_path: Path) -> None:
    model, _ = build_tiny_llama(0)
    torch.manual_seed(0)
    model = attach_lora(model, LoraSpec())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    want = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    path = save_checkpoint(tmp_path, 7, model, {"hello": torch.arange(3)})
    assert path.name == "step-7" and (path / STATE_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["step-7"]  # no temp dirs left behind

    fresh, _ = build_tiny_llama(0)
    torch.manual_seed(1)
    fresh = attach_lora(fresh, LoraSpec())
    state = load_checkpoint(path, fresh)
    assert state["step"] == 7 and torch.equal(state["hello"], torch.arange(3))
    assert all(torch.equal(p, want[n]) for n, p in fresh.named_parameters() if p.requires_grad)


def test_missing_state_file(tmp_path: Path) -> None:
    model, _ = build_tiny_llama(0)
    with pytest.raises(FileNotFoundError, match="trainer_state.pt"):
        load_checkpoint(tmp_path, attach_lora(model, LoraSpec()))
