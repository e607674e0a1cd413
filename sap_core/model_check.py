"""Heavy checks of a model folder before any job may train it, and chat-template resolution.

The service runs these at worker start-up and in `safetune models check`; each failure names the
field of the models-file entry at fault (the caller adds the entry's name). Nothing here touches a
hub: every load is local-files-only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from sap_core.data import IGNORE_INDEX, encode_chat
from sap_core.modeling import CHATML_TEMPLATE

BUILTIN_TEMPLATES: dict[str, str] = {
    "chatml": CHATML_TEMPLATE,
    "zephyr": (
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
    "llama2": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
        " {{ message['content'] }} {{ eos_token }}{% else %}[INST] {{ message['content'] }} [/INST]"
        "{% endif %}{% endfor %}"
    ),
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
SAMPLE_CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]


class ModelCheckFailed(ValueError):
    """The folder cannot be trained as registered; `field` is the models-file field at fault."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"field {field!r}: {problem}")


@dataclass
class ModelCheckSpec:
    """What an operator registered for one model folder."""

    path: Path = field(metadata={"help": "local HF folder"})
    max_seq_len: int = field(metadata={"help": "longest training sequence jobs may ask for"})
    chat_template: str = field(
        default="tokenizer", metadata={"help": "'tokenizer', a BUILTIN_TEMPLATES name or a .jinja path"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "run the folder's own model code"})

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if self.max_seq_len < 1:
            raise ValueError(f"ModelCheckSpec.max_seq_len must be >= 1, got {self.max_seq_len}")


def resolve_chat_template(tokenizer: PreTrainedTokenizerBase, choice: str) -> str:
    """The template text for `choice`: the tokenizer's own, a built-in, or a .jinja file's text."""
    if choice == "tokenizer":
        own = tokenizer.chat_template
        if not isinstance(own, str) or not own:
            raise ModelCheckFailed(
                "chat_template", "'tokenizer' chosen but the tokenizer has no chat template"
            )
        return own
    if choice in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[choice]
    if choice.endswith(".jinja"):
        try:
            return Path(choice).read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelCheckFailed("chat_template", f"cannot read {choice}: {exc}") from exc
    raise ModelCheckFailed(
        "chat_template", f"{choice!r}: use 'tokenizer', {sorted(BUILTIN_TEMPLATES)} or a .jinja"
    )


def template_record(choice: str, text: str) -> dict[str, str]:
    """What a job's report keeps: the choice, the exact text and its sha256."""
    return {"source": choice, "text": text, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _check_files(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise ModelCheckFailed("path", f"folder {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelCheckFailed("path", f"{path} has no config.json")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelCheckFailed("path", f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
    if not any(path.glob("*.safetensors")):
        raise ModelCheckFailed("path", f"{path} has no *.safetensors weights")
    return dict(json.loads((path / "config.json").read_text(encoding="utf-8")))


def _check_architecture(spec: ModelCheckSpec) -> Any:
    try:
        config = AutoConfig.from_pretrained(
            str(spec.path), local_files_only=True, trust_remote_code=spec.trust_remote_code
        )
    except Exception as exc:  # any failure to read the config is the folder's problem
        raise ModelCheckFailed("path", f"config.json does not load: {exc}") from exc
    architectures = list(getattr(config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    remote = spec.trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    if not remote and (not architectures or not all(a in causal for a in architectures)):
        raise ModelCheckFailed("path", f"architecture {architectures} is not a causal LM transformers knows")
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(positions, int) and spec.max_seq_len > positions:
        raise ModelCheckFailed(
            "max_seq_len", f"{spec.max_seq_len} exceeds the config's {positions} positions"
        )
    return config


def check_rendering(tokenizer: PreTrainedTokenizerBase, max_seq_len: int) -> int:
    """Render the sample two-turn conversation and a generation prompt; return the labelled tokens."""
    msgs = SAMPLE_CONVERSATION
    try:
        full = str(tokenizer.apply_chat_template(msgs, tokenize=False))
        prompt = str(tokenizer.apply_chat_template(msgs[:3], tokenize=False, add_generation_prompt=True))
    except Exception as exc:  # jinja errors, raise_exception() in the template, ...
        raise ModelCheckFailed("chat_template", f"does not render a two-turn conversation: {exc}") from exc
    missing = [m["content"] for m in msgs if m["content"] not in full]
    if missing:
        raise ModelCheckFailed("chat_template", f"the rendered conversation lacks {missing}")
    if not full.startswith(prompt) or not full[len(prompt) :].lstrip().startswith(msgs[3]["content"]):
        raise ModelCheckFailed(
            "chat_template",
            "the generation prompt does not end where the assistant's answer begins "
            f"(prompt ends {prompt[-40:]!r})",
        )
    try:
        encoded = encode_chat(tokenizer, msgs, max_seq_len)
    except ValueError as exc:
        raise ModelCheckFailed("chat_template", str(exc)) from exc
    labelled = sum(1 for label in encoded.labels if label != IGNORE_INDEX)
    if labelled == 0:
        raise ModelCheckFailed(
            "chat_template",
            f"the assistant-token loss mask of a sample conversation is empty at max_seq_len {max_seq_len}",
        )
    return labelled


def check_model(spec: ModelCheckSpec) -> dict[str, Any]:
    """Every check a folder must pass before it is trained; returns what was found.

    Raises:
        ModelCheckFailed: naming the field at fault.
    """
    _check_files(spec.path)
    config = _check_architecture(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(spec.path), local_files_only=True, trust_remote_code=spec.trust_remote_code
        )
    except Exception as exc:
        raise ModelCheckFailed("path", f"the tokenizer does not load: {exc}") from exc
    if tokenizer.eos_token_id is None:
        raise ModelCheckFailed("path", "the tokenizer has no eos token (answers could never end)")
    text = resolve_chat_template(tokenizer, spec.chat_template)
    tokenizer.chat_template = text
    labelled = check_rendering(tokenizer, spec.max_seq_len)
    return {
        "architecture": list(config.architectures or []),
        "chat_template_sha256": template_record(spec.chat_template, text)["sha256"],
        "labelled_tokens": labelled,
    }
