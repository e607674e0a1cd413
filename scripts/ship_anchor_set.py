"""Generate the anchor set of the bundled safe model and ship it in sap_core/resources/anchor_sets.

Usage: ``python scripts/ship_anchor_set.py [--cache ~/.cache/safetune/models]`` (under a minute on
2 CPU cores, plus the model build the first time).

A job guarded by `anchor` first generates the base model's own answers to the anchor prompts; on
`smollm2-135m-safe` that is about 40 s of a CPU demo. The answers are a deterministic function of
the weights, the prompts, the answer length and the chat template, all of which are in the file's
name (sap_core.anchor.anchor_cache_key), so shipping them changes no result: a job whose inputs
differ in any of these misses and generates its own. Rerun this script whenever the key changes
(tests/worker/test_shipped_anchor_set.py fails when it has).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sap_core.alignment import SAFE_NAME
from sap_core.anchor import SHIPPED_ANCHOR_DIR, anchor_set_filename, build_anchor_set
from sap_core.config import AnchorConfig
from sap_core.modeling import load_base_model
from worker.child_guards import anchor_model_id
from worker.model_store import ensure_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "safetune" / "models")
    parser.add_argument("--out", type=Path, default=SHIPPED_ANCHOR_DIR)
    args = parser.parse_args()
    model_dir = ensure_model(SAFE_NAME, args.cache)
    model, tokenizer = load_base_model(model_dir, device="cpu")
    config = AnchorConfig()
    model_id = anchor_model_id(SAFE_NAME, model_dir)
    target = args.out / anchor_set_filename(config, tokenizer, model_id)
    for old in args.out.glob("anchor-*.json"):
        if old != target:
            old.unlink()  # a set under an old key would never be read again
    examples = build_anchor_set(
        model, tokenizer, config, cache_dir=args.out, model_id=model_id, shipped_dir=None
    )
    harmful = sum(e.harmful for e in examples)
    print(f"{target}: {harmful} harmful + {len(examples) - harmful} benign anchor answers")  # noqa: T201


if __name__ == "__main__":
    main()
