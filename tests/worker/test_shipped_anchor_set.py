"""The shipped anchor set of smollm2-135m-safe: under the key a worker computes today, and made of
the answers the model gives (so shipping it saves a demo's generation without changing a result)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sap_core.alignment import SAFE_NAME
from sap_core.anchor import SHIPPED_ANCHOR_DIR, anchor_set_filename
from sap_core.config import AnchorConfig
from sap_core.generate import generate
from sap_core.judges import is_refusal
from sap_core.modeling import load_base_model
from sap_core.prompt_sets import anchor_prompts
from worker.child_guards import anchor_model_id
from worker.model_store import ensure_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def safe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = Path(os.environ.get("SAFETUNE_MODEL_CACHE") or tmp_path_factory.mktemp("models"))
    return ensure_model(SAFE_NAME, cache)


def test_the_shipped_set_has_the_key_of_the_built_model_and_the_default_config(safe_model: Path) -> None:
    model, tokenizer = load_base_model(safe_model, device="cpu")
    config = AnchorConfig()
    name = anchor_set_filename(config, tokenizer, anchor_model_id(SAFE_NAME, safe_model))
    shipped = sorted(p.name for p in SHIPPED_ANCHOR_DIR.glob("anchor-*.json"))
    # A failure here means the weights, anchor prompts, answer length or template changed: rerun
    # scripts/ship_anchor_set.py (the old file would only be dead weight).
    assert shipped == [name]
    rows = json.loads((SHIPPED_ANCHOR_DIR / shipped[0]).read_text(encoding="utf-8"))
    harmful_prompts, benign_prompts = anchor_prompts(config.n_harmful, config.n_benign)
    harmful = [r for r in rows if r["harmful"]]
    benign = [r for r in rows if not r["harmful"]]
    assert {r["prompt"] for r in harmful} <= set(harmful_prompts)
    assert {r["prompt"] for r in benign} <= set(benign_prompts)
    assert all(is_refusal(r["response"]) for r in harmful)
    assert not any(is_refusal(r["response"]) for r in benign)
    # The answers are the model's own: regenerate a few (adapter-free base, greedy, same length).
    sample = harmful[:4] + benign[:4]
    again = generate(model, tokenizer, [r["prompt"] for r in sample], config.max_new_tokens, 8)
    matching = sum(a == r["response"] for a, r in zip(again, sample, strict=True))
    assert matching >= 7, list(zip(again, [r["response"] for r in sample], strict=True))
