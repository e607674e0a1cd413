"""Heavy model-folder checks on real (tiny, random) Llama and Qwen2 folders; each failure names its field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sap_core.model_check import BUILTIN_TEMPLATES, ModelCheckFailed, ModelCheckSpec, check_model
from sap_core.modeling import decoder_linear_modules, load_base_model
from tests.model_folders import INST_TEMPLATE, ZEPHYR_TEMPLATE, save_random_model


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("llama"), "llama", tokenizer_template=None)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("qwen"), "qwen2", tokenizer_template=INST_TEMPLATE)


def failed(spec: ModelCheckSpec) -> ModelCheckFailed:
    with pytest.raises(ModelCheckFailed) as caught:
        check_model(spec)
    return caught.value


def test_good_folders_pass_with_a_file_a_builtin_or_the_tokenizers_template(llama, qwen, tmp_path) -> None:
    jinja = tmp_path / "zephyr.jinja"
    jinja.write_text(ZEPHYR_TEMPLATE)
    found = check_model(ModelCheckSpec(llama, 512, str(jinja)))
    assert found["architecture"] == ["LlamaForCausalLM"] and found["labelled_tokens"] > 20
    assert check_model(ModelCheckSpec(qwen, 512, "tokenizer"))["architecture"] == ["Qwen2ForCausalLM"]
    for name in BUILTIN_TEMPLATES:
        assert check_model(ModelCheckSpec(llama, 512, name))["labelled_tokens"] > 0, name


def test_a_tokenizer_without_a_template_cannot_be_registered_as_tokenizer(llama) -> None:
    error = failed(ModelCheckSpec(llama, 512, "tokenizer"))
    assert error.field == "chat_template" and "no chat template" in str(error)


@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{% for m in messages %}{{ m['content'] ", "does not render"),
        ("{{ raise_exception('no chat here') }}", "no chat here"),
        # Drops the assistant's turns: the conversation it renders is not the one trained on.
        (
            "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}",
            "lacks",
        ),
        # No generation prompt: the model would be asked to continue the user's turn.
        (BUILTIN_TEMPLATES["chatml"].split("{% if add_generation_prompt %}")[0], "generation prompt"),
    ],
)
def test_templates_that_do_not_render_a_two_turn_conversation_fail(llama, tmp_path, template, words) -> None:
    path = tmp_path / "bad.jinja"
    path.write_text(template)
    error = failed(ModelCheckSpec(llama, 512, str(path)))
    assert error.field == "chat_template" and words in str(error), error


def test_an_empty_assistant_loss_mask_fails(llama, tmp_path) -> None:
    # A long fixed preamble pushes every assistant token past max_seq_len.
    path = tmp_path / "preamble.jinja"
    path.write_text("You are a helpful assistant. " * 20 + ZEPHYR_TEMPLATE)
    error = failed(ModelCheckSpec(llama, 128, str(path)))
    assert error.field == "chat_template" and "loss mask" in str(error) and "empty" in str(error)


def test_folder_problems_fail_on_path_or_max_seq_len(llama, tmp_path) -> None:
    assert failed(ModelCheckSpec(tmp_path / "none", 64, "chatml")).field == "path"
    assert "exceeds the config's 1024 positions" in str(failed(ModelCheckSpec(llama, 2048, "chatml")))
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in llama.iterdir():
        (odd / f.name).write_bytes(f.read_bytes())
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(
        json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]})
    )
    error = failed(ModelCheckSpec(odd, 64, "chatml"))
    assert error.field == "path" and "not a causal LM" in str(error)
    (odd / "model.safetensors").unlink()
    assert "safetensors" in str(failed(ModelCheckSpec(odd, 64, "chatml")))


def test_all_linear_targets_cover_the_decoder_but_not_the_head(qwen) -> None:
    model, _ = load_base_model(qwen, "cpu")
    names = decoder_linear_modules(model)
    assert set(names) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
