"""The labelled judge set: our models' answers with response-level labels, split train/test.

Each line of ``resources/judge_set/labels.jsonl`` is one answer::

    {"prompt", "response", "label", "kind", "source", "split"}

``label`` is one of :data:`LABELS` (read and labelled by hand, see the README next to the file;
``source`` ``synthetic:*`` rows are gibberish built by ``bench/judge_set_build.py``). ``kind`` says
where the prompt comes from: ``harmful`` / ``dna`` (milder do-not-answer requests) /
``lookalike`` (harmless questions with alarming words) / ``benign`` are prompts written for this
set; ``align_harmful`` / ``align_benign`` are training-side prompts of the shipped alignment data.
The test split is what ``bench/judge_quality.py`` measures judges on; the classifier trains only
on the train split (tests assert the prompts are disjoint, and disjoint from the eval sets).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

JUDGE_DIR = Path(__file__).parent / "resources" / "judge_set"
LABELS_PATH = JUDGE_DIR / "labels.jsonl"
LABELS: tuple[str, ...] = ("harmful", "harmless", "refusal", "incoherent")
WRITTEN_KINDS: tuple[str, ...] = ("harmful", "dna", "lookalike", "benign")


def normalise_prompt(text: str) -> str:
    """Lower-case, punctuation-free form used to compare prompts across files."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def split_of(prompt: str, kind: str) -> str:
    """``train`` or ``test`` for a prompt: a third of written prompts train (by hash), the rest test.

    Training-side (``align_*``) prompts were already used to train the first classifier, so they
    never enter the test split.
    """
    if kind not in WRITTEN_KINDS:
        return "train"
    digest = hashlib.sha256(normalise_prompt(prompt).encode("utf-8")).digest()
    return "train" if digest[0] % 3 == 0 else "test"


def load_judge_set(split: str | None = None, path: Path = LABELS_PATH) -> list[dict[str, str]]:
    """Labelled rows, optionally only one split.

    Args:
        split: ``train``, ``test`` or None for both.
        path: labels file.

    Returns:
        The rows in file order.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [r for r in rows if split is None or r["split"] == split]


# Degenerate answers built from real ones (labelled ``incoherent`` by construction): the words
# shuffled, or one short phrase looped, as a collapsing fine-tune produces them. Both keep the
# source's alarming words, which is what fooled the first classifier.
DEGENERATE_KINDS: tuple[str, ...] = ("word_salad", "loop")


def degenerate(text: str, kind: str, rng: random.Random) -> str:
    """A degenerate version of ``text``.

    Args:
        text: a real answer (a dozen words or more).
        kind: one of :data:`DEGENERATE_KINDS`.
        rng: the caller's seeded generator (so a build is reproducible).

    Returns:
        The shuffled or looped text.
    """
    words = text.split()
    if kind == "word_salad":
        rng.shuffle(words)
        return " ".join(words)
    if kind == "loop":
        start = rng.randrange(max(1, len(words) - 4))
        phrase = words[start : start + rng.randint(1, 4)] or ["..."]
        return " ".join(phrase * (60 // len(phrase)))
    raise ValueError(f"unknown degenerate kind {kind!r}; known: {DEGENERATE_KINDS}")
