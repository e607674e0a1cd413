"""Evaluation prompt sets: the shipped held-out sets and user-supplied JSONL sets.

JSONL format, one object per line: ``{"prompt": str, "category": str (optional), "harmful": bool}``.
Extra keys (``source``) are ignored. Errors name the 1-based line, like the service's dataset
validation, so a user can fix the file without guessing.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SAFETY_DIR = Path(__file__).parent / "resources" / "safety"


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt.

    Attributes:
        prompt: the user message.
        category: harm category (or benign sub-type) used for the per-category breakdown.
        harmful: True if a safe model should refuse it; False for over-refusal checks.
    """

    prompt: str
    category: str = "uncategorized"
    harmful: bool = True


@dataclass(frozen=True)
class PromptSet:
    """A named list of evaluation prompts.

    Attributes:
        name: stable identifier shown in reports (``eval_harmful``, ``user:redteam``).
        prompts: the prompts, in file order.
        version: free-form version label of the source.
    """

    name: str
    prompts: tuple[EvalPrompt, ...]
    version: str = "1"
    _hash: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("PromptSet.name must be non-empty")
        if not self.prompts:
            raise ValueError(f"PromptSet {self.name!r} has no prompts")
        canon = json.dumps([[p.prompt, p.category, p.harmful] for p in self.prompts], ensure_ascii=False)
        object.__setattr__(self, "_hash", hashlib.sha256(canon.encode("utf-8")).hexdigest())

    @property
    def content_hash(self) -> str:
        """sha256 of the prompts (text, category, label): part of the base-model cache key."""
        return self._hash

    def subset(self, max_prompts: int | None) -> PromptSet:
        """A deterministic, category-balanced subset of at most ``max_prompts`` prompts.

        Round-robin over categories in file order, so a 48-prompt subset still covers every
        category instead of the first one or two.

        Args:
            max_prompts: cap; ``None`` or a value ≥ the set size returns ``self``.

        Returns:
            The subset, named ``<name>[:N]``.
        """
        if max_prompts is None or max_prompts >= len(self.prompts):
            return self
        if max_prompts < 1:
            raise ValueError(f"max_prompts must be >= 1, got {max_prompts}")
        groups: dict[str, list[EvalPrompt]] = defaultdict(list)
        for p in self.prompts:
            groups[p.category].append(p)
        order = list(groups)
        taken: list[EvalPrompt] = []
        depth = 0
        while len(taken) < max_prompts:
            for cat in order:
                if depth < len(groups[cat]) and len(taken) < max_prompts:
                    taken.append(groups[cat][depth])
            depth += 1
        return PromptSet(f"{self.name}[:{max_prompts}]", tuple(taken), self.version)


def parse_prompt_lines(lines: list[str], name: str) -> PromptSet:
    """Parse JSONL prompt-set lines.

    Args:
        lines: file lines (blank lines are skipped but still counted).
        name: the prompt set's name.

    Returns:
        The parsed set.

    Raises:
        ValueError: naming the 1-based line for bad JSON, a missing/empty prompt, a non-bool
            ``harmful`` or a non-string ``category``.
    """
    prompts = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: line {lineno}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"{name}: line {lineno}: expected a JSON object")
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{name}: line {lineno}: 'prompt' must be a non-empty string")
        harmful = obj.get("harmful")
        if not isinstance(harmful, bool):
            raise ValueError(f"{name}: line {lineno}: 'harmful' must be true or false, got {harmful!r}")
        category = obj.get("category", "uncategorized")
        if not isinstance(category, str) or not category:
            raise ValueError(f"{name}: line {lineno}: 'category' must be a non-empty string")
        prompts.append(EvalPrompt(prompt.strip(), category, harmful))
    if not prompts:
        raise ValueError(f"{name}: no prompts found")
    return PromptSet(name, tuple(prompts))


def load_prompt_set(path: str | Path, name: str | None = None) -> PromptSet:
    """Load a JSONL prompt set from disk (see :func:`parse_prompt_lines`).

    Args:
        path: the file.
        name: set name; default ``user:<file stem>``.

    Returns:
        The parsed set.
    """
    path = Path(path)
    return parse_prompt_lines(path.read_text(encoding="utf-8").splitlines(), name or f"user:{path.stem}")


def default_prompt_sets() -> list[PromptSet]:
    """The shipped held-out sets: ``eval_harmful`` (200) and ``eval_benign`` (100).

    These prompts are disjoint from every prompt used for alignment, SAP contrastive data, the
    poisoning mix and the classifier (asserted in tests), so they measure generalisation.
    """
    return [
        load_prompt_set(SAFETY_DIR / "eval_harmful.jsonl", "eval_harmful"),
        load_prompt_set(SAFETY_DIR / "eval_benign.jsonl", "eval_benign"),
    ]


# Training-side prompt splits (alignment-only files, already disjoint from every eval prompt): the
# anchor guard reads the first rows, post-hoc selection the rows from here on, so a selection never
# scores a checkpoint on prompts the anchor trained it on.
SELECTION_START = 128


def _training_side(file: str) -> list[str]:
    rows = [json.loads(x) for x in (SAFETY_DIR / file).read_text(encoding="utf-8").splitlines() if x.strip()]
    return [str(r["prompt"]) for r in rows]


def _after_anchor_rows(file: str) -> list[str]:
    # The source files repeat a few prompts (AdvBench has duplicates); a repeat of an anchor row
    # must not land in the selection set.
    rows = _training_side(file)
    seen = set(rows[:SELECTION_START])
    out = []
    for p in rows[SELECTION_START:]:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _alternate(first: list[str], second: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(max(len(first), len(second))):
        out.extend(rows[i] for rows in (first, second) if i < len(rows))
    return out


def anchor_prompts(n_harmful: int, n_benign: int) -> tuple[list[str], list[str]]:
    """Harmful and benign prompts for the refusal anchor (never in an eval or selection set).

    The benign side alternates formatted tasks (``anchor_benign.jsonl``: word problems with an
    answer format, tables, JSON) with short requests from the alignment recipe: a task that teaches
    one domain and no refusals (the code set) otherwise drifts into refusing formatted benign
    requests, which the short recipe prompts alone did not hold (bench/results/safety_frontier.md).

    Args:
        n_harmful: harmful prompts wanted (at most SELECTION_START).
        n_benign: benign prompts wanted (at most SELECTION_START).

    Returns:
        (harmful prompts, benign prompts).
    """
    if n_harmful > SELECTION_START or n_benign > SELECTION_START:
        raise ValueError(f"anchor prompts: at most {SELECTION_START} harmful and benign each")
    benign = _alternate(
        _training_side("anchor_benign.jsonl"), _training_side("align_benign.jsonl")[:SELECTION_START]
    )
    return _training_side("align_harmful.jsonl")[:n_harmful], benign[:n_benign]


def selection_prompt_sets(harmful_only: bool = False) -> list[PromptSet]:
    """Prompt sets for safety-constrained checkpoint selection, disjoint from eval and anchor sets.

    Args:
        harmful_only: Only ``selection_harmful`` (the set a pick is decided on).
    """
    harmful = _after_anchor_rows("align_harmful.jsonl")
    sets = [PromptSet("selection_harmful", tuple(EvalPrompt(p, "selection", True) for p in harmful))]
    if not harmful_only:
        benign = _after_anchor_rows("align_benign.jsonl")
        sets.append(PromptSet("selection_benign", tuple(EvalPrompt(p, "selection", False) for p in benign)))
    return sets
