"""Parse and validate a JSONL upload completely, in memory, before anything is written (STYLE rule 15).

Accepted training formats (detected from line 1; every line must match it), all normalised to chat
messages:

- chat:               {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
- prompt_completion:  {"prompt": "...", "completion": "..."}
- alpaca:             {"instruction": "...", "input": "..."?, "output": "..."}

Evaluation prompts (purpose "evaluation"): {"prompt": "...", "category": "..."?, "harmful": bool}.
Errors are SafetuneErrors carrying a 1-based ``line`` and a ``param`` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from safetune.config import Settings
from safetune.errors import ErrorCode, SafetuneError

Purpose = Literal["training", "validation", "evaluation"]
Message = dict[str, str]

ROLES = ("system", "user", "assistant")
MAX_JSON_DEPTH = 16
READ_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DatasetLimits:
    max_bytes: int
    max_lines: int
    max_line_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings, *, max_bytes: int | None = None) -> DatasetLimits:
        """The configured limits; ``max_bytes`` lets a tenant's own (smaller or larger) cap win."""
        return cls(
            max_bytes=max_bytes or settings.max_dataset_bytes,
            max_lines=settings.max_dataset_lines,
            max_line_bytes=settings.max_line_bytes,
        )


@dataclass
class ParsedDataset:
    """A validated upload. ``sha256`` is that of ``normalized_jsonl``; ``size_bytes`` is the size the
    client uploaded (what it sees as the file's size, like OpenAI's ``bytes``), not the stored size."""

    format: str
    examples: list[list[Message]]
    num_examples: int
    sha256: str
    normalized_jsonl: bytes
    size_bytes: int
    eval_prompts: list[dict[str, Any]] = field(default_factory=list)


def read_capped(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` in chunks; one byte more means the upload is too large (413).

    Never reads a multi-GB upload fully into memory: reading stops at the limit + 1.
    """
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(min(READ_CHUNK_BYTES, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise SafetuneError(
                ErrorCode.DATASET_TOO_LARGE,
                f"the dataset exceeds the limit of {max_bytes} bytes",
                param="dataset",
            )


def _fail(message: str, line: int, param: str = "dataset") -> SafetuneError:
    return SafetuneError(ErrorCode.DATASET_INVALID_LINE, f"line {line}: {message}", param=param, line=line)


def _depth(value: Any, limit: int) -> int:
    if isinstance(value, dict | list):
        children = value.values() if isinstance(value, dict) else value
        deepest = 0
        for child in children:
            deepest = max(deepest, _depth(child, limit))
            if deepest >= limit:
                break
        return 1 + deepest
    return 0


def _text(obj: dict[str, Any], key: str, line: int, path: str, *, required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise _fail(f"missing required field {path!r}", line, path)
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise _fail(f"{path!r} must be a string, got {type(value).__name__}", line, path)
    if "\x00" in value:
        raise _fail(f"{path!r} contains a NUL character", line, path)
    if required and not value.strip():
        raise _fail(f"{path!r} must be a non-empty string", line, path)
    return value


def _no_extra_keys(obj: dict[str, Any], allowed: set[str], line: int, prefix: str = "") -> None:
    for key in obj:
        if key not in allowed:
            raise _fail(f"unexpected field {prefix + key!r}", line, prefix + key)


def _parse_chat(obj: dict[str, Any], line: int) -> list[Message]:
    _no_extra_keys(obj, {"messages"}, line)
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise _fail("'messages' must be a non-empty list", line, "messages")
    out: list[Message] = []
    for i, msg in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _fail(f"{path!r} must be an object", line, path)
        _no_extra_keys(msg, {"role", "content"}, line, f"{path}.")
        role = _text(msg, "role", line, f"{path}.role")
        if role not in ROLES:
            raise _fail(f"{path}.role must be one of {', '.join(ROLES)}, got {role!r}", line, f"{path}.role")
        if role == "system" and i != 0:
            raise _fail("a system message may only come first", line, f"{path}.role")
        content = _text(msg, "content", line, f"{path}.content")
        assert role is not None and content is not None
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise _fail("a conversation needs at least one user message", line, "messages")
    if out[-1]["role"] != "assistant":
        raise _fail(
            "a conversation must end with an assistant message", line, f"messages[{len(out) - 1}].role"
        )
    return out


def _parse_prompt_completion(obj: dict[str, Any], line: int) -> list[Message]:
    _no_extra_keys(obj, {"prompt", "completion"}, line)
    prompt = _text(obj, "prompt", line, "prompt")
    completion = _text(obj, "completion", line, "completion")
    assert prompt is not None and completion is not None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _parse_alpaca(obj: dict[str, Any], line: int) -> list[Message]:
    _no_extra_keys(obj, {"instruction", "input", "output"}, line)
    instruction = _text(obj, "instruction", line, "instruction")
    extra = _text(obj, "input", line, "input", required=False)
    output = _text(obj, "output", line, "output")
    assert instruction is not None and output is not None
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def _parse_eval(obj: dict[str, Any], line: int) -> dict[str, Any]:
    _no_extra_keys(obj, {"prompt", "category", "harmful"}, line)
    prompt = _text(obj, "prompt", line, "prompt")
    category = _text(obj, "category", line, "category", required=False)
    if "harmful" not in obj:
        raise _fail("missing required field 'harmful'", line, "harmful")
    if not isinstance(obj["harmful"], bool):
        raise _fail("'harmful' must be true or false", line, "harmful")
    return {"prompt": prompt, "category": category or "general", "harmful": obj["harmful"]}


TRAINING_PARSERS: dict[str, Callable[[dict[str, Any], int], list[Message]]] = {
    "chat": _parse_chat,
    "prompt_completion": _parse_prompt_completion,
    "alpaca": _parse_alpaca,
}


def _detect(obj: dict[str, Any], purpose: Purpose, line: int) -> str:
    if purpose == "evaluation":
        return "eval_prompts"
    if "messages" in obj:
        return "chat"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    if "prompt" in obj or "completion" in obj:
        return "prompt_completion"
    raise _fail(
        "unrecognised record: expected {'messages': [...]}, {'prompt', 'completion'} "
        "or {'instruction', 'output'}",
        line,
    )


# json.loads reads an unpaired "\ud800" escape into a str that UTF-8 cannot encode (RFC 8259 §8.2:
# such strings are "unpredictable"); caught here, it never reaches the stored JSONL, Postgres or an
# error message. Only lines with such an escape (valid emoji pairs included) pay for the check.
LONE_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode_line(raw: bytes, line: int, limits: DatasetLimits) -> Any:
    if len(raw) > limits.max_line_bytes:
        raise _fail(f"the line is {len(raw)} bytes; the limit is {limits.max_line_bytes}", line)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetuneError(
            ErrorCode.DATASET_ENCODING,
            f"line {line}: not valid UTF-8 (byte offset {exc.start} in the line)",
            param="dataset",
            line=line,
        ) from None
    if line == 1:
        text = text.removeprefix("\ufeff")
    try:
        obj = json.loads(text)
    except RecursionError:
        raise _fail(f"JSON nesting deeper than {MAX_JSON_DEPTH} levels", line) from None
    except json.JSONDecodeError as exc:
        raise _fail(f"malformed JSON: {exc.msg} at column {exc.colno}", line) from None
    if _depth(obj, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
        raise _fail(f"JSON nesting deeper than {MAX_JSON_DEPTH} levels", line)
    if LONE_SURROGATE_HINT.search(text) and not _encodable(obj):
        raise SafetuneError(
            ErrorCode.DATASET_ENCODING,
            f"line {line}: a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), "
            "which is not valid Unicode",
            param="dataset",
            line=line,
        )
    if not isinstance(obj, dict):
        raise _fail(f"each line must be a JSON object, got {type(obj).__name__}", line)
    return obj


def parse_dataset(data: bytes, purpose: Purpose, limits: DatasetLimits) -> ParsedDataset:
    """Validate every line of ``data`` and return the normalised dataset; raise on the first error."""
    if len(data) > limits.max_bytes:
        raise SafetuneError(
            ErrorCode.DATASET_TOO_LARGE,
            f"the dataset is {len(data)} bytes; the limit is {limits.max_bytes}",
            param="dataset",
        )
    fmt: str | None = None
    examples: list[list[Message]] = []
    prompts: list[dict[str, Any]] = []
    out_lines: list[bytes] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the trailing newline does not start a line
    # Blank lines are tolerated (below), so only the others count toward the limit.
    counted = sum(1 for raw in lines if raw.strip())
    if counted > limits.max_lines:
        raise SafetuneError(
            ErrorCode.DATASET_TOO_LARGE,
            f"the dataset has {counted} non-blank lines; the limit is {limits.max_lines}",
            param="dataset",
        )
    for number, raw in enumerate(lines, start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue  # blank lines are tolerated (editors add them); they are not examples
        obj = _decode_line(raw, number, limits)
        line_format = _detect(obj, purpose, number)
        if fmt is None:
            fmt = line_format
        elif line_format != fmt:
            raise _fail(
                f"this record looks like {line_format!r} but line 1 set the format to {fmt!r}", number
            )
        if fmt == "eval_prompts":
            record = _parse_eval(obj, number)
            prompts.append(record)
            examples.append([{"role": "user", "content": record["prompt"]}])
        else:
            record = {"messages": TRAINING_PARSERS[fmt](obj, number)}
            examples.append(record["messages"])
        out_lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if fmt is None:
        raise SafetuneError(ErrorCode.DATASET_EMPTY, "the dataset contains no examples", param="dataset")
    normalized = b"\n".join(out_lines) + b"\n"
    return ParsedDataset(
        format=fmt,
        examples=examples,
        num_examples=len(examples),
        sha256=hashlib.sha256(normalized).hexdigest(),
        normalized_jsonl=normalized,
        size_bytes=len(data),
        eval_prompts=prompts,
    )
