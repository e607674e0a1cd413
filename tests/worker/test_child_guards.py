"""The training child's guard plumbing: the anchor set's cache is keyed by the model's content."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from worker.child_guards import model_revision
from worker.model_digest import model_digest


def build(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_anchor_cache_revision_is_the_content_digest_of_the_base_eval_cache(tmp_path: Path) -> None:
    """One identity per model folder for both caches: a copy with other mtimes is the same model, a
    rebuild with other bytes (even of the same size) is not."""
    first = build(tmp_path / "a" / "m", b"weights-1")
    copy = build(tmp_path / "b" / "m", b"weights-1")
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert model_revision(first) == model_revision(copy) == model_digest(first)
    rebuilt = build(tmp_path / "c" / "m", b"weights-2")  # same size, other bytes
    assert model_revision(rebuilt) != model_revision(first)


def test_an_unbuilt_folder_has_no_revision(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="not a built model folder"):
        model_revision(tmp_path / "half")
