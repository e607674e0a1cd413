"""`smollm2-135m-safe` from the shipped refusal LoRA: merge it into the converted base in seconds.

`safetune safety-align` (`sap_core.alignment`) trains that LoRA from scratch (minutes to an hour on a
CPU); its result ships in ``weights/smollm2-135m-safe/`` (the two PEFT files plus
``alignment.json``: recipe, data hashes, held-out refusal rates), so a fresh machine only merges.
The merge repeats alignment's own fp32 merge, so the weights are the ones the recipe produced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sap_core.adapters import ADAPTER_FILES, load_adapter
from sap_core.alignment import BASE_NAME, METADATA_FILE, SAFE_NAME, AlignConfig, ensure_base
from sap_core.atomic import write_dir_atomically
from sap_core.modeling import load_base_model
from sap_core.prompt_sets import SAFETY_DIR

SHIPPED_DIR = Path(__file__).parent / "weights" / SAFE_NAME
SHIPPED_META = "alignment.json"
# Files whose content defines the alignment data; their hashes are recorded with the shipped LoRA.
ALIGNMENT_DATA = ("align_harmful.jsonl", "align_benign.jsonl", "refusal_templates.jsonl")


def file_sha256(path: Path) -> str:
    """sha256 hex digest of one file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alignment_data_hashes() -> dict[str, str]:
    """The current hashes of the alignment data files in this checkout."""
    return {name: file_sha256(SAFETY_DIR / name) for name in ALIGNMENT_DATA}


def ship_adapter(adapter_dir: Path, safe_model_dir: Path, out: Path = SHIPPED_DIR) -> Path:
    """Copy a trained refusal LoRA and its run's metadata into the package resources.

    Args:
        adapter_dir: The unmerged LoRA written by `safety-align --adapter-out`.
        safe_model_dir: The merged model that run wrote (for its `safety_alignment.json`).
        out: Destination folder.

    Returns:
        The folder.
    """
    run = json.loads((safe_model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    meta = {
        "name": SAFE_NAME,
        "base": BASE_NAME,
        "base_weights_sha256": run["base_weights_sha256"],
        "align_config": run["align_config"],
        "train_config": run["train_config"],
        "data_sha256": alignment_data_hashes(),
        "adapter_sha256": file_sha256(adapter_dir / "adapter_model.safetensors"),
        "merged_weights_sha256": _weights_sha(safe_model_dir),
        "held_out_refusal": {k: _counts(v) for k, v in run["held_out_refusal"].items() if k != "examples"},
        "steps_done": run["steps_done"],
        "final_loss": run["final_loss"],
        "judge": run["judge"],
        "training_seconds": run["seconds"],
        "command": "python -m sap_core.alignment --cache DIR --adapter-out DIR",
    }

    def write(tmp: Path) -> None:
        for name in ADAPTER_FILES:
            shutil.copyfile(adapter_dir / name, tmp / name)
        (tmp / SHIPPED_META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    return write_dir_atomically(out, write)


def shipped_metadata(shipped: Path = SHIPPED_DIR) -> dict[str, Any]:
    """The shipped LoRA's `alignment.json`."""
    meta: dict[str, Any] = json.loads((shipped / SHIPPED_META).read_text(encoding="utf-8"))
    return meta


def recipe_matches(meta: dict[str, Any]) -> list[str]:
    """What differs between the shipped LoRA's record and the recipe and data in this checkout."""
    problems = []
    if meta["align_config"] != asdict(AlignConfig()):
        problems.append("align_config differs from AlignConfig() defaults")
    current = alignment_data_hashes()
    problems += [
        f"{n} changed since the LoRA was trained"
        for n in ALIGNMENT_DATA
        if meta["data_sha256"][n] != current[n]
    ]
    return problems


def build_safe_from_shipped(cache: Path, shipped: Path = SHIPPED_DIR) -> Path:
    """Write ``<cache>/smollm2-135m-safe`` by merging the shipped LoRA into the converted base.

    Args:
        cache: Model cache (gets the converted base too if it is missing).
        shipped: Folder holding the shipped LoRA.

    Returns:
        The model folder.
    """
    meta = shipped_metadata(shipped)
    base_dir = ensure_base(cache)
    model, tokenizer = load_base_model(base_dir, device="cpu")
    merged = load_adapter(model, shipped).merge_and_unload()

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {**meta, "built_from": "shipped adapter", "shipped_dir": _portable(shipped)}
        (tmp / METADATA_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    return write_dir_atomically(cache / SAFE_NAME, write)


def _portable(shipped: Path) -> str:
    """The shipped folder relative to sap_core when it is the bundled one: the built model's files,
    and so its content digest (the key of the base-evaluation and anchor caches), must not depend on
    where the repository is checked out."""
    try:
        return shipped.resolve().relative_to(Path(__file__).resolve().parent).as_posix()
    except ValueError:
        return str(shipped)


def _weights_sha(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


def _counts(rates: dict[str, Any]) -> dict[str, Any]:
    return {k: rates[k] for k in ("refused", "n", "rate")}
