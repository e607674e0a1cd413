"""Screen a user's training examples for harmful content before fine-tuning.

Each example (a list of chat messages, one JSONL line) gets a score in [0, 1]:

* 0 when every assistant turn is a refusal: refusing a harmful request is safety data, not poison;
* otherwise the mean of the prompt head on the user turns and the response head on the
  assistant turns (max over turns for each). Averaging needs both a harmful request and a
  compliant harmful answer to reach a high score, so an edgy-but-benign question ("how do I kill a
  process") answered normally stays low.

The caller decides what to do (reject the dataset above a share, or drop the flagged lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sap_core.judges import is_refusal


@dataclass(frozen=True)
class ScreeningResult:
    """Outcome of :func:`screen_examples`.

    Attributes:
        scores: one score per example, in input order.
        flagged_lines: 1-based line numbers of examples with ``score >= threshold``.
        threshold: the threshold used.
    """

    scores: tuple[float, ...]
    flagged_lines: tuple[int, ...]
    threshold: float

    @property
    def flagged_share(self) -> float:
        """Fraction of examples flagged (0.0 for an empty dataset)."""
        return len(self.flagged_lines) / len(self.scores) if self.scores else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (scores of flagged lines only, to keep it small)."""
        return {
            "n_examples": len(self.scores),
            "flagged_lines": list(self.flagged_lines),
            "flagged_scores": [round(self.scores[i - 1], 4) for i in self.flagged_lines],
            "flagged_share": self.flagged_share,
            "threshold": self.threshold,
        }


def screen_examples(
    examples: list[list[dict[str, str]]],
    classifier: Any | None = None,
    threshold: float = 0.5,
) -> ScreeningResult:
    """Score training examples with the prompt/response harmfulness classifier.

    Args:
        examples: chat examples; ``examples[i]`` is the message list of JSONL line ``i + 1``.
        classifier: a :class:`~sap_core.harm_classifier.HarmClassifier`; default: the shipped one.
        threshold: score at or above which a line is flagged.

    Returns:
        The :class:`ScreeningResult`.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if classifier is None:
        from sap_core.harm_classifier import load_default_classifier

        classifier = load_default_classifier()
    users: list[tuple[int, str]] = []
    answers: list[tuple[int, str]] = []
    all_refused = []
    for i, messages in enumerate(examples):
        turns = [m["content"] for m in messages if m.get("role") == "assistant"]
        users += [(i, m["content"]) for m in messages if m.get("role") == "user"]
        answers += [(i, t) for t in turns]
        all_refused.append(bool(turns) and all(is_refusal(t) for t in turns))
    # One embedding pass per head over the whole dataset: batching dominates the cost.
    p_user = classifier.prompt_scores([t for _, t in users]) if users else []
    p_answer = classifier.response_scores([t for _, t in answers]) if answers else []
    best_user = [0.0] * len(examples)
    best_answer = [0.0] * len(examples)
    for (i, _), p in zip(users, p_user, strict=True):
        best_user[i] = max(best_user[i], p)
    for (i, _), p in zip(answers, p_answer, strict=True):
        best_answer[i] = max(best_answer[i], p)
    scores = tuple(
        0.0 if refused else (u + a) / 2
        for u, a, refused in zip(best_user, best_answer, all_refused, strict=True)
    )
    flagged = tuple(i + 1 for i, s in enumerate(scores) if s >= threshold)
    return ScreeningResult(scores=scores, flagged_lines=flagged, threshold=threshold)
