"""Building, converting and loading base models, and attaching LoRA."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from sap_core.atomic import write_dir_atomically
from sap_core.config import LoraSpec

# Never reach for the hub: the service runs offline and a silent download would hide a missing cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GPU_DTYPES = {
    "auto": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
}
IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|pad|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Build a byte-level tokenizer in code: 256 byte tokens + ChatML specials.

    Returns:
        A PreTrainedTokenizerFast with a ChatML chat template; eos = pad = <|im_end|>.
    """
    # A BPE with no merges over the 256-symbol byte alphabet is exactly "one token per byte".
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"additional_special_tokens": [IM_START, IM_END, PAD]})
    # eos = pad = <|im_end|> like SmolLM2, so padding code paths match the real model.
    fast.eos_token = IM_END
    fast.pad_token = IM_END
    fast.bos_token = IM_START
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "right"
    return fast


def build_tiny_llama(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Build a tiny random Llama (hidden 64, 4 layers) and its byte-level tokenizer.

    Args:
        seed: Seed for the weight init; the same seed gives identical weights.

    Returns:
        (model in eval mode, tokenizer).
    """
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # fork_rng keeps the caller's global RNG untouched while making the init a function of `seed`.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer


def save_tiny_llama(out_dir: str | Path, seed: int = 0) -> Path:
    """Materialise the tiny model + tokenizer so it loads with `load_base_model`.

    Args:
        out_dir: Destination folder (created; replaced atomically).
        seed: Weight-init seed.

    Returns:
        The folder path.
    """
    model, tokenizer = build_tiny_llama(seed)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return write_dir_atomically(out_dir, write)


def convert_gguf_to_hf(
    gguf_path: str | Path, out_dir: str | Path, *, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Convert a GGUF (SmolLM2 Q4_1) into a plain HF folder, once (models_data.md §1 recipe).

    Weights are saved in fp32: the dequantised Q4_1 values (q*scale+min) are not exactly representable
    in bf16, fp32 is lossless with respect to the GGUF, and CPU training runs in fp32 anyway, so
    nothing is cast at load time. The cost is disk (≈540 MB) in a cache dir that is never committed.

    Args:
        gguf_path: Path to the .gguf file.
        out_dir: Destination folder; written to a temp dir first and renamed (atomic).
        progress: optional callback (parts done, parts): read GGUF, dequantise, write.

    Returns:
        The folder path.
    """
    gguf_path = Path(gguf_path)
    d, f = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(d, gguf_file=f)
    quant = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    if progress is not None:
        progress(1, 3)
    cfg = quant.config
    if hasattr(cfg, "quantization_config"):
        # save_pretrained refuses gguf-"quantized" models; the weights are already plain fp32.
        delattr(cfg, "quantization_config")
    plain = LlamaForCausalLM(cfg)  # type: ignore[arg-type]  # a Llama config, typed as the base class
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ValueError(f"GGUF state dict mismatch: missing={missing} unexpected={unexpected}")
    del quant
    if progress is not None:
        progress(2, 3)

    def write(tmp: Path) -> None:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    folder = write_dir_atomically(out_dir, write)
    if progress is not None:
        progress(3, 3)
    return folder


def load_base_model(
    path: str | Path,
    device: str | None = None,
    *,
    quantization: str | None = None,
    chat_template: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local HF model folder (offline, local files only).

    Args:
        path: Folder written by `save_pretrained` / `convert_gguf_to_hf`.
        device: "cpu", "cuda", "cuda:N" or None (cuda when available).
        quantization: None, or "4bit" for a QLoRA base (bitsandbytes NF4; CUDA only, see
            `acceleration.qlora_unavailable_reason`).
        chat_template: Template text that replaces the tokenizer's own (None keeps it).
        dtype: Weights on CUDA: "auto" (bfloat16), "bfloat16", "float16" or "float32". CPU is fp32.
        trust_remote_code: Let the folder's own modelling code run (operator's choice per model).

    Returns:
        (model in eval mode, tokenizer with right padding and a pad token).
    """
    from sap_core import acceleration  # imports this module; loaded here to keep the import acyclic

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # Frozen base in bf16 on GPU halves memory; training uses bf16 autocast there anyway. CPU stays fp32.
    if dtype not in GPU_DTYPES:
        raise ValueError(f"dtype={dtype!r}: must be one of {sorted(GPU_DTYPES)}")
    torch_dtype = GPU_DTYPES[dtype] if device.startswith("cuda") else torch.float32
    extra: dict[str, Any] = {}
    if quantization not in (None, acceleration.QLORA):
        raise ValueError(f"quantization={quantization!r}: must be None or {acceleration.QLORA!r}")
    if quantization is not None:
        reason = acceleration.qlora_unavailable_reason(device)
        if reason is not None:
            raise ValueError(f"quantization={quantization!r}: {reason}")
        # bitsandbytes places the quantized weights itself; .to() on a 4-bit model is refused.
        extra = {**acceleration.quantized_load_kwargs(), "device_map": {"": device}}
    tokenizer = AutoTokenizer.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=trust_remote_code
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    model = AutoModelForCausalLM.from_pretrained(
        str(path),
        local_files_only=True,
        dtype=torch_dtype,
        attn_implementation=acceleration.ATTENTION,
        trust_remote_code=trust_remote_code,
        **extra,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if quantization is None:
        model.to(device)  # type: ignore[arg-type]  # transformers types .to() too narrowly
    else:
        model = acceleration.prepare_quantized(model)  # type: ignore[assignment]
    model.eval()
    return model, tokenizer


def decoder_linear_modules(model: torch.nn.Module) -> tuple[str, ...]:
    """Names (last path part) of every linear layer in the decoder; the output head is left out.

    The usual "all linear" LoRA default (QLoRA's finding that adapting every layer matters), spelled
    out as names so the adapter config lists exactly what was adapted.
    """
    output = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
    }
    return tuple(sorted(names - {"lm_head"}))


def attach_lora(model: PreTrainedModel, spec: LoraSpec) -> PeftModel:
    """Wrap `model` with a fresh LoRA adapter; only adapter weights are trainable.

    Args:
        model: Base causal LM.
        spec: Adapter shape.

    Returns:
        The PeftModel.
    """
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.target_modules),
        task_type="CAUSAL_LM",
    )
    with peft_compat_warnings():
        return get_peft_model(model, config)


@contextlib.contextmanager
def peft_compat_warnings() -> Iterator[None]:
    """Silence one known transformers-5 deprecation that peft 0.21 triggers internally.

    peft reads `model.is_gradient_checkpointing` (renamed in transformers 5); our own code never
    does, and the test suite turns transformers FutureWarnings into errors (STYLE rule 23).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def autocast_for(model: torch.nn.Module) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast when the model lives on CUDA, otherwise a no-op (CPU trains in fp32)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def task_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token loss over labelled tokens; HF shifts labels internally (no pre-shift).

    Args:
        model: Causal LM (PeftModel or plain).
        batch: {"input_ids", "attention_mask", "labels"} on the model's device.

    Returns:
        Scalar loss tensor.
    """
    with autocast_for(model):
        out = model(**batch)
    return out.loss.float()


def target_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) at every shifted position, and which positions are labelled.

    Args:
        logits: [B, T, V] model outputs.
        labels: [B, T] labels aligned with the inputs (IGNORE_INDEX = -100 where unlabelled).

    Returns:
        (logp [B, T-1] float32, mask [B, T-1] bool): logits[t] scores labels[t+1].
    """
    targets = labels[:, 1:]
    mask = targets != -100
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def base_model_context(model: torch.nn.Module) -> contextlib.AbstractContextManager[object]:
    """Run `model` as its base: the LoRA adapter disabled on a PeftModel; a no-op on a plain model."""
    if isinstance(model, PeftModel):
        return model.disable_adapter()
    return contextlib.nullcontext()
