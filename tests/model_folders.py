"""Random-weight model folders of real architectures, saved the way an operator's folder looks.

Tiny sizes (2 layers, width 32) and a byte-level tokenizer built in code, so nothing is downloaded;
the chat templates are deliberately not ChatML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

# Zephyr-style turns: <|user|> ... </s>
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Llama-2-style [INST] turns; the generation prompt is the end of the user turn itself.
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
    " {{ message['content'] }} {{ eos_token }}{% else %}[INST] {{ message['content'] }} [/INST]"
    "{% endif %}{% endfor %}"
)


def byte_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """256 byte tokens + <s>, </s>, <pad>; eos = </s>."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"})
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def save_random_model(
    out: Path,
    arch: Literal["llama", "qwen2"],
    tokenizer_template: str | None = None,
    seed: int = 0,
    max_positions: int = 1024,
) -> Path:
    """Save a random `arch` causal LM and its tokenizer (with `tokenizer_template`, if any) to `out`."""
    tokenizer = byte_tokenizer(tokenizer_template)
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": max_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    torch.manual_seed(seed)
    if arch == "llama":
        model: LlamaForCausalLM | Qwen2ForCausalLM = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out
