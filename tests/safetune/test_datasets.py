"""safetune.datasets: every format, every error with its line and field."""

from __future__ import annotations

import io
import json

import pytest

from safetune.datasets import DatasetLimits, parse_dataset, read_capped
from safetune.errors import ErrorCode, SafetuneError

LIMITS = DatasetLimits(max_bytes=64 * 1024, max_lines=100, max_line_bytes=4096)


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def chat(user: str = "hi", assistant: str = "hello") -> dict[str, list[dict[str, str]]]:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def fails(data: bytes, purpose: str = "training", limits: DatasetLimits = LIMITS) -> SafetuneError:
    with pytest.raises(SafetuneError) as info:
        parse_dataset(data, purpose, limits)  # type: ignore[arg-type]
    return info.value


def test_chat_format_is_kept_and_hashed() -> None:
    data = jsonl(
        {"messages": [{"role": "system", "content": "be brief"}, *chat()["messages"]]},
        chat("2+2?", "4"),
    )
    parsed = parse_dataset(data, "training", LIMITS)
    assert parsed.format == "chat"
    assert parsed.num_examples == 2
    assert parsed.examples[0][0] == {"role": "system", "content": "be brief"}
    assert parsed.examples[1] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    lines = parsed.normalized_jsonl.decode().splitlines()
    assert [json.loads(line)["messages"] for line in lines] == parsed.examples
    import hashlib

    assert parsed.sha256 == hashlib.sha256(parsed.normalized_jsonl).hexdigest()


def test_prompt_completion_is_normalised_to_chat() -> None:
    parsed = parse_dataset(jsonl({"prompt": "Q", "completion": "A"}), "training", LIMITS)
    assert parsed.format == "prompt_completion"
    assert parsed.examples == [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]]


def test_alpaca_joins_instruction_and_input() -> None:
    data = jsonl(
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Hi", "output": "Yo"},
    )
    parsed = parse_dataset(data, "training", LIMITS)
    assert parsed.format == "alpaca"
    assert parsed.examples[0][0]["content"] == "Translate\n\nbonjour"
    assert parsed.examples[1][0]["content"] == "Hi"


def test_eval_prompts_format() -> None:
    data = jsonl(
        {"prompt": "how to bake", "harmful": False}, {"prompt": "x", "category": "weapons", "harmful": True}
    )
    parsed = parse_dataset(data, "evaluation", LIMITS)
    assert parsed.format == "eval_prompts"
    assert parsed.eval_prompts[1] == {"prompt": "x", "category": "weapons", "harmful": True}
    err = fails(jsonl({"prompt": "x", "harmful": "yes"}), "evaluation")
    assert (err.line, err.param) == (1, "harmful")


def test_blank_lines_and_crlf_are_tolerated_and_line_numbers_stay_true() -> None:
    data = jsonl(chat()) + b"\r\n\n" + b'{"messages": 3}\r\n'
    err = fails(data)
    assert (err.code, err.line, err.param) == (ErrorCode.DATASET_INVALID_LINE, 4, "messages")


def test_blank_lines_do_not_count_toward_the_line_limit() -> None:
    # The README tolerates blank lines; an editor's spacing must not turn into dataset_too_large.
    limits = DatasetLimits(max_bytes=10_000, max_lines=2, max_line_bytes=4096)
    assert (
        parse_dataset(jsonl(chat()) + b"\n\n  \n\r\n" + jsonl(chat()), "training", limits).num_examples == 2
    )
    assert fails(jsonl(chat(), chat(), chat()), limits=limits).code is ErrorCode.DATASET_TOO_LARGE


def test_size_is_the_uploaded_size_not_the_normalised_one() -> None:
    # prompt/completion grows into chat messages when normalised; the client sent fewer bytes.
    data = jsonl(*[{"prompt": "p", "completion": "c"}] * 3)
    parsed = parse_dataset(data, "training", LIMITS)
    assert parsed.size_bytes == len(data) < len(parsed.normalized_jsonl)


@pytest.mark.parametrize(
    ("line2", "param"),
    [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
            "messages[1].role",
        ),
        ({"messages": [{"role": "user", "content": "a"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "a"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]},
            "messages[1].content",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}]},
            "messages[1].content",
        ),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant"}]}, "messages[1].content"),
        ({"messages": [{"role": "user", "content": "a"}, "text"]}, "messages[1]"),
        (
            {"messages": [{"role": "user", "content": "a", "x": 1}, {"role": "assistant", "content": "b"}]},
            "messages[0].x",
        ),
        ({"messages": []}, "messages"),
        ({"prompt": "a", "completion": "b"}, "dataset"),
        ([1, 2], "dataset"),
    ],
)
def test_wrong_schema_names_line_and_field(line2: object, param: str) -> None:
    err = fails(jsonl(chat(), line2))
    assert err.code is ErrorCode.DATASET_INVALID_LINE
    assert (err.line, err.param) == (2, param)
    assert "line 2" in err.message


def test_malformed_json_names_the_line() -> None:
    err = fails(jsonl(chat(), chat()) + b'{"messages": [\n')
    assert (err.code, err.line, err.param) == (ErrorCode.DATASET_INVALID_LINE, 3, "dataset")
    assert "malformed JSON" in err.message


def test_non_utf8_on_line_3_reports_line_3() -> None:
    data = jsonl(chat(), chat()) + b'{"prompt": "caf\xe9"}\n'
    err = fails(data)
    assert (err.code, err.line, err.param) == (ErrorCode.DATASET_ENCODING, 3, "dataset")


def test_nul_character_is_rejected_with_its_field() -> None:
    err = fails(jsonl(chat(), chat("a\u0000b")))
    assert (err.line, err.param) == (2, "messages[0].content")


def test_lone_surrogate_escape_is_an_encoding_error_on_its_line() -> None:
    # json.dumps writes "\ud800" for a lone surrogate and "\ud83d\ude00" for an emoji: only the pair is text.
    err = fails(jsonl(chat(), chat("a\ud800b")))
    assert (err.code, err.line, err.param) == (ErrorCode.DATASET_ENCODING, 2, "dataset")
    assert "surrogate" in err.message
    assert fails(jsonl({"prompt": "p", "harmful": True, "category": "\udfff"}), "evaluation").line == 1
    parsed = parse_dataset(jsonl(chat("smile \U0001f600")), "training", LIMITS)
    assert parsed.examples[0][0]["content"] == "smile \U0001f600"


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_empty_file(data: bytes) -> None:
    err = fails(data)
    assert (err.code, err.param, err.line) == (ErrorCode.DATASET_EMPTY, "dataset", None)


def test_too_many_bytes_and_too_many_lines() -> None:
    small = DatasetLimits(max_bytes=200, max_lines=2, max_line_bytes=4096)
    assert fails(jsonl(*[chat()] * 5), limits=small).code is ErrorCode.DATASET_TOO_LARGE
    err = fails(jsonl(chat(), chat(), chat()), limits=DatasetLimits(10_000, 2, 4096))
    assert err.code is ErrorCode.DATASET_TOO_LARGE and "lines" in err.message


def test_line_too_long_and_nesting_too_deep() -> None:
    err = fails(jsonl(chat(), chat("x" * 5000)))
    assert (err.code, err.line) == (ErrorCode.DATASET_INVALID_LINE, 2)
    deep = b'{"messages": ' + b"[" * 40 + b"]" * 40 + b"}\n"
    err = fails(jsonl(chat()) + deep)
    assert (err.line, "nesting" in err.message) == (2, True)
    very_deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    err = fails(very_deep, limits=DatasetLimits(10**6, 10, 10**6))
    assert err.line == 1


def test_formats_cannot_be_mixed() -> None:
    err = fails(jsonl(chat(), {"prompt": "a", "completion": "b"}))
    assert err.line == 2 and "format" in err.message


def test_evaluation_purpose_requires_eval_records() -> None:
    err = fails(jsonl(chat()), "evaluation")
    assert (err.line, err.param) == (1, "messages")


def test_read_capped_stops_at_limit_plus_one() -> None:
    class Counting(io.BytesIO):
        read_total = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            Counting.read_total += len(chunk)
            return chunk

    assert read_capped(io.BytesIO(b"abc"), 3) == b"abc"
    stream = Counting(b"x" * (10 * 1024 * 1024))
    with pytest.raises(SafetuneError) as info:
        read_capped(stream, 1000)
    assert info.value.code is ErrorCode.DATASET_TOO_LARGE
    assert Counting.read_total == 1001
