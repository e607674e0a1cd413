from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sap_core.contrastive import load_contrastive_jsonl
from sap_core.data import IGNORE_INDEX, collate, encode_chat, length_grouped_batches


def test_assistant_only_labels_hand_checked(tiny: tuple) -> None:
    model, tok = tiny
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    ex = encode_chat(tok, msgs, max_seq_len=512)
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
    assert list(ex.input_ids) == tok(text, add_special_tokens=False)["input_ids"]
    labelled = [i for i, label in enumerate(ex.labels) if label != IGNORE_INDEX]
    # byte tokens: ... "\n" "o" "k" <|im_end|> "\n"  -> exactly "o", "k", <|im_end|> are trained on
    assert tok.decode([ex.input_ids[i] for i in labelled]) == "ok<|im_end|>"
    assert labelled == [len(ex) - 4, len(ex) - 3, len(ex) - 2]
    assert all(ex.labels[i] == ex.input_ids[i] for i in labelled)  # aligned, not pre-shifted


def test_loss_shift_is_not_doubled(tiny: tuple) -> None:
    model, tok = tiny
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    ex = encode_chat(tok, msgs, max_seq_len=512)
    batch = collate([ex], tok.pad_token_id)
    with torch.no_grad():
        out = model(**batch)
    # By hand: logits at t score token t+1, only where labels[t+1] is set.
    logits, ids = out.logits[0], batch["input_ids"][0]
    pos = [t for t in range(len(ex) - 1) if ex.labels[t + 1] != IGNORE_INDEX]
    manual = torch.stack([-torch.log_softmax(logits[t], -1)[ids[t + 1]] for t in pos]).mean()
    assert torch.allclose(out.loss, manual, atol=1e-6)


def test_multi_turn_and_truncation(tiny: tuple) -> None:
    _, tok = tiny
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    ex = encode_chat(tok, msgs, max_seq_len=512)
    got = tok.decode([i for i, label in zip(ex.input_ids, ex.labels, strict=True) if label != IGNORE_INDEX])
    assert got == "b<|im_end|>d<|im_end|>"
    short = encode_chat(tok, msgs, max_seq_len=10)
    assert len(short.input_ids) == len(short.labels) == 10
    with pytest.raises(ValueError, match="assistant"):
        encode_chat(tok, msgs[:2], max_seq_len=512)


def test_collate_right_pads_and_masks(tiny: tuple) -> None:
    _, tok = tiny
    a = encode_chat(tok, [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], 512)
    b = encode_chat(tok, [{"role": "user", "content": "xxxx"}, {"role": "assistant", "content": "y"}], 512)
    batch = collate([a, b], tok.pad_token_id)
    assert batch["attention_mask"][0].tolist() == [1] * len(a) + [0] * (len(b) - len(a))
    assert (batch["labels"][0, len(a) :] == IGNORE_INDEX).all()


def test_length_grouped_batches_are_seeded_and_reduce_padding() -> None:
    lengths = [((i * 37) % 100) + 1 for i in range(256)]
    b1 = length_grouped_batches(lengths, 8, seed=3)
    assert b1 == length_grouped_batches(lengths, 8, seed=3)
    assert b1 != length_grouped_batches(lengths, 8, seed=4)
    assert b1 != length_grouped_batches(lengths, 8, seed=3, epoch=1)
    assert sorted(i for b in b1 for i in b) == list(range(256))

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    naive = [list(range(i, i + 8)) for i in range(0, 256, 8)]
    assert padding(b1) < padding(naive) / 3


def test_contrastive_jsonl_line_numbers(tmp_path: Path) -> None:
    good = {"prompt": "p", "safe": "s", "harmful": "h"}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"prompt": "p", "safe": ""}) + "\n")
    with pytest.raises(ValueError, match="line 3"):
        load_contrastive_jsonl(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_contrastive_jsonl(path)[0].harmful == "h"
