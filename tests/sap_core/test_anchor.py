from __future__ import annotations

import json
from pathlib import Path

import torch

from sap_core.anchor import AnchorExample, AnchorGuard, build_anchor_set, gradient_surgery, kl_to_base
from sap_core.config import AnchorConfig, LoraSpec, TrainConfig
from sap_core.generate import generate
from sap_core.modeling import attach_lora, build_tiny_llama
from sap_core.prompt_sets import SAFETY_DIR, anchor_prompts, default_prompt_sets, selection_prompt_sets
from sap_core.train import finetune
from tests.sap_core.conftest import make_anchor_set, make_chats


def _perturbed_lora(seed: int = 0) -> tuple[torch.nn.Module, object]:
    model, tok = build_tiny_llama(seed)
    torch.manual_seed(seed)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    with torch.no_grad():  # a trained-looking adapter, so "adapter on" and "adapter off" differ
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft, tok


def test_anchor_prompts_are_disjoint_from_every_eval_and_selection_prompt() -> None:
    harmful, benign = anchor_prompts(128, 128)
    evaluated = {p.prompt for ps in default_prompt_sets() for p in ps.prompts}
    selected = {p.prompt for ps in selection_prompt_sets() for p in ps.prompts}
    assert len(harmful) == 128 and len(benign) == 128
    assert not (set(harmful) | set(benign)) & evaluated
    assert not (set(harmful) | set(benign)) & selected
    assert not selected & evaluated


def test_benign_anchor_mixes_formatted_tasks_without_the_eval_answer_template() -> None:
    _, benign = anchor_prompts(0, 32)
    evaluated = [p.prompt for ps in default_prompt_sets() for p in ps.prompts]
    eval_template = "end with `Answer:"
    assert sum(eval_template in p for p in evaluated) >= 40  # the eval's word problems use it
    formatted = {
        json.loads(x)["prompt"] for x in (SAFETY_DIR / "anchor_benign.jsonl").read_text().splitlines()
    }
    # Half the pool is formatted tasks, half short recipe requests, interleaved from the start.
    assert len(set(benign)) == 32 and sum(p in formatted for p in benign) == 16
    assert benign[0] in formatted and benign[1] not in formatted
    # The formatted anchor tasks use other answer formats, so what they keep the tuned model
    # answering is formatted requests in general, not the eval's exact template.
    assert not any("`Answer:" in p for p in benign)


def test_anchor_answers_come_from_the_adapter_disabled_model(tmp_path: Path) -> None:
    model, tok = _perturbed_lora()
    cfg = AnchorConfig(n_harmful=4, n_benign=2, max_new_tokens=6)
    harmful, benign = anchor_prompts(4, 2)
    with model.disable_adapter():
        base_answers = generate(model, tok, harmful + benign, 6, 8)
    tuned_answers = generate(model, tok, harmful + benign, 6, 8)
    assert base_answers != tuned_answers  # the check below could tell the two apart
    # A random model refuses nothing; mark every answer a refusal to see what is kept and cached.
    examples = build_anchor_set(
        model, tok, cfg, cache_dir=tmp_path, model_id="tiny", refusal_test=lambda a: True
    )
    assert [e.response for e in examples] == base_answers[:4]
    assert all(e.harmful for e in examples)
    cached = list(tmp_path.glob("anchor-*.json"))
    assert len(cached) == 1
    # The cache is read back (same key), and a different model id misses it.
    again = build_anchor_set(
        model, tok, cfg, cache_dir=tmp_path, model_id="tiny", refusal_test=lambda a: True
    )
    assert again == examples
    build_anchor_set(model, tok, cfg, cache_dir=tmp_path, model_id="other", refusal_test=lambda a: True)
    assert len(list(tmp_path.glob("anchor-*.json"))) == 2


def test_surgery_changes_the_task_gradient_only_when_the_two_conflict() -> None:
    g_anchor = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    agree = [torch.tensor([0.5, 2.0]), torch.tensor([1.0])]
    combined, projected = gradient_surgery(agree, g_anchor, weight=0.3, projection=True)
    assert not projected
    assert all(torch.equal(c, a + 0.3 * b) for c, a, b in zip(combined, agree, g_anchor, strict=True))

    conflict = [torch.tensor([-2.0, 1.0]), torch.tensor([3.0])]
    combined, projected = gradient_surgery(conflict, g_anchor, weight=0.0, projection=True)
    assert projected
    # The conflicting component is gone: the projected task gradient is orthogonal to the anchor's.
    assert sum(float((c * b).sum()) for c, b in zip(combined, g_anchor, strict=True)) == 0.0
    assert torch.equal(combined[0], torch.tensor([0.0, 1.0])) and torch.equal(
        combined[1], torch.tensor([3.0])
    )

    replay, projected = gradient_surgery(conflict, g_anchor, weight=1.0, projection=False)
    assert not projected
    assert torch.equal(replay[0], torch.tensor([-1.0, 1.0]))


def test_kl_to_base_is_zero_at_the_start_and_grows_with_the_adapter() -> None:
    model, tok = build_tiny_llama(0)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    guard = AnchorGuard(peft, tok, make_anchor_set(), AnchorConfig(batch_size=4), 64)
    batch = guard._next_batch()
    assert float(kl_to_base(peft, batch).detach()) < 1e-6  # B = 0: the tuned model is the base
    perturbed, tok = _perturbed_lora()
    assert (
        float(
            kl_to_base(
                perturbed, AnchorGuard(perturbed, tok, make_anchor_set(), AnchorConfig(), 64)._next_batch()
            )
        )
        > 1e-3
    )


def test_every_anchor_batch_mixes_benign_look_alikes_with_the_harmful_refusals() -> None:
    # A single cycle over harmful-then-benign would show the benign answers only once per cycle (late
    # in a short job); each batch must hold benign_per_batch of them, each pool cycled on its own.
    model, tok = build_tiny_llama(0)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    examples = [
        *make_anchor_set(5)[:5],
        AnchorExample("How do I bake bread?", "Mix flour, water and yeast.", False),
        AnchorExample("How do I boil an egg?", "Simmer it for eight minutes.", False),
    ]
    guard = AnchorGuard(peft, tok, examples, AnchorConfig(batch_size=3, benign_per_batch=1), 64)
    assert guard.settings()["anchor_benign"] == 2

    def decoded(batch: dict[str, torch.Tensor]) -> list[str]:
        return [tok.decode([t for t in row.tolist() if t != tok.pad_token_id]) for row in batch["input_ids"]]

    seen_benign, seen_harmful = [], []
    for _ in range(5):
        texts = decoded(guard._next_batch())
        benign = [t for t in texts if "bread" in t or "egg" in t]
        assert len(texts) == 3 and len(benign) == 1
        seen_benign += benign
        seen_harmful += [t for t in texts if t not in benign]
    assert ["bread" in t for t in seen_benign] == [True, False, True, False, True]
    assert len({t for t in seen_harmful}) == 5  # 10 harmful slots cycle through all 5 refusals

    none_benign = AnchorGuard(peft, tok, examples, AnchorConfig(batch_size=3, benign_per_batch=0), 64)
    assert not any("bread" in t or "egg" in t for t in decoded(none_benign._next_batch()))


def _anchor_kl_after(guard: str) -> float:
    model, tok = build_tiny_llama(0)
    torch.manual_seed(0)
    peft = attach_lora(model, LoraSpec(dropout=0.0))
    cfg = TrainConfig(
        guard=guard,
        max_steps=8,
        batch_size=4,
        max_seq_len=64,
        learning_rate=2e-2,
        warmup_ratio=0.0,
        anchor=AnchorConfig(batch_size=7, weight=4.0),
    )
    anchors = make_anchor_set()
    finetune(peft, tok, make_chats(16), cfg, anchor_set=anchors)
    probe = AnchorGuard(peft, tok, anchors, AnchorConfig(batch_size=7), 64)._next_batch()
    return float(kl_to_base(peft, probe))


def test_anchor_keeps_the_anchor_answers_closer_to_the_base_than_plain_sft() -> None:
    plain = _anchor_kl_after("none")
    anchored = _anchor_kl_after("anchor")
    assert plain > 0.01  # plain SFT on other data does move the anchor answers
    assert anchored < 0.75 * plain


def test_on_a_base_that_refuses_nothing_the_anchor_stands_aside_and_says_why(tmp_path: Path) -> None:
    # The default guard must not fail a job on an unaligned base (here the random tiny model, whose
    # answers are never refusals): training matches plain SFT bit for bit and the report says why.
    model, tok = _perturbed_lora()
    cfg = AnchorConfig(n_harmful=4, n_benign=2, max_new_tokens=6)
    examples = build_anchor_set(model, tok, cfg, cache_dir=tmp_path, model_id="tiny")
    assert examples == []
    guard = AnchorGuard(model, tok, examples, cfg, max_seq_len=64)
    assert guard.settings()["inactive"].startswith("the base refuses none")

    chats = make_chats(6)
    runs = []
    for guard_name in ("anchor", "none"):
        model, tok = build_tiny_llama(0)
        torch.manual_seed(0)
        peft = attach_lora(model, LoraSpec(dropout=0.0))
        config = TrainConfig(guard=guard_name, max_steps=2, batch_size=2, max_seq_len=64)
        finetune(peft, tok, chats, config, anchor_set=[])
        runs.append({n: p.detach().clone() for n, p in peft.named_parameters() if p.requires_grad})
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
