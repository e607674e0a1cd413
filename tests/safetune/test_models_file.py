"""The models file: schema, cheap fail-closed checks (each names the entry and field), writing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from safetune.base_models import BUILTIN_NAMES, get_base_model, registry, reload_registry
from safetune.config import get_settings
from safetune.errors import SafetuneError
from safetune.models_file import ModelEntry, ModelsFileError, add_entry, parse_models_file

LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 2,
    "max_position_embeddings": 1024,
}


def fake_folder(root: Path, config: dict[str, object] | None = None, weights: bool = True) -> Path:
    """The files the cheap checks look at (they never open the weights)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(config or LLAMA_CONFIG))
    (root / "tokenizer.json").write_text("{}")
    if weights:
        (root / "model.safetensors").write_bytes(b"x")
    return root


def write_file(path: Path, *entries: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"models": list(entries)}))
    return path


@pytest.fixture
def use_models_file(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def use(path: Path) -> None:
        monkeypatch.setenv("SAFETUNE_MODELS_FILE", str(path))
        get_settings.cache_clear()
        reload_registry()

    yield use
    monkeypatch.delenv("SAFETUNE_MODELS_FILE", raising=False)
    get_settings.cache_clear()
    reload_registry()


def failure(path: Path) -> ModelsFileError:
    reload_registry()
    get_settings.cache_clear()
    with pytest.raises(ModelsFileError) as caught:
        _load(path)
    return caught.value


def _load(path: Path) -> None:
    from safetune.base_models import _load_registry

    _load_registry(path)


def test_a_good_entry_joins_the_built_ins_with_its_layers_and_template(
    tmp_path: Path, use_models_file
) -> None:
    fake_folder(tmp_path / "m")
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    use_models_file(
        write_file(
            tmp_path / "models.yaml",
            {"name": "my-llama", "path": "m", "chat_template": "t.jinja", "max_seq_len": 512},
        )
    )
    models = registry()
    assert list(models)[: len(BUILTIN_NAMES)] == list(BUILTIN_NAMES)
    info = get_base_model("my-llama")
    assert (info.source, info.num_layers, info.max_seq_len) == ("file", 2, 512)
    assert info.local_dir(tmp_path / "cache") == (tmp_path / "m").resolve()
    assert info.chat_template == str((tmp_path / "t.jinja").resolve())
    with pytest.raises(SafetuneError) as unknown:
        get_base_model("nope")
    assert "my-llama" in unknown.value.message and "tiny-random-llama" in unknown.value.message


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({"max_seq_len": "long"}, "max_seq_len", "integer"),
        ({"path": "missing"}, "path", "does not exist"),
        ({"max_seq_len": 4096}, "max_seq_len", "exceeds the config's 1024 positions"),
        ({"chat_template": "absent.jinja"}, "chat_template", "does not exist"),
        ({"chat_template": "vicuna"}, "chat_template", "use 'tokenizer'"),
        ({"probe_layers": [5]}, "probe_layers", "below the model's 2 layers"),
        ({"aligned_from": "ghost"}, "aligned_from", "not a registered model"),
        ({"name": "tiny-random-llama"}, "name", "duplicates a built-in"),
    ],
)
def test_each_bad_entry_fails_naming_entry_and_field(
    tmp_path: Path, entry: dict[str, object], field: str, words: str
) -> None:
    fake_folder(tmp_path / "m")
    base = {"name": "bad-one", "path": "m", "max_seq_len": 512}
    error = failure(write_file(tmp_path / "models.yaml", {**base, **entry}))
    assert error.entry == entry.get("name", "bad-one") and error.field == field, error
    assert words in str(error) and f"entry {error.entry!r} field {field!r}" in str(error)


@pytest.mark.parametrize(
    ("config", "weights", "words"),
    [
        ({"architectures": ["BertModel"], "num_hidden_layers": 2}, True, "not a causal LM"),
        (LLAMA_CONFIG, False, "no *.safetensors"),
    ],
)
def test_a_folder_that_cannot_train_fails_on_path(tmp_path: Path, config, weights: bool, words: str) -> None:
    fake_folder(tmp_path / "m", config, weights)
    error = failure(write_file(tmp_path / "models.yaml", {"name": "x", "path": "m", "max_seq_len": 64}))
    assert (error.entry, error.field) == ("x", "path") and words in str(error)


def test_the_api_refuses_to_start_on_a_bad_models_file(tmp_path: Path, use_models_file) -> None:
    from api.main import create_app

    use_models_file(
        write_file(tmp_path / "models.yaml", {"name": "gone", "path": "nowhere", "max_seq_len": 64})
    )
    with pytest.raises(ModelsFileError, match="entry 'gone' field 'path'"):
        create_app()


def test_add_entry_writes_a_file_that_parses_back(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "models.yaml"
    entry = ModelEntry(name="a", path=fake_folder(tmp_path / "m"), max_seq_len=128, probe_layers=[1])
    add_entry(path, entry)
    add_entry(path, ModelEntry(name="b", path=tmp_path / "m", max_seq_len=64, chat_template="zephyr"))
    parsed = parse_models_file(path)
    assert [(e.name, e.max_seq_len, e.chat_template) for e in parsed] == [
        ("a", 128, "tokenizer"),
        ("b", 64, "zephyr"),
    ]
    assert parsed[0].probe_layers == [1] and parsed[0].path == (tmp_path / "m").resolve()
    with pytest.raises(ModelsFileError, match="already registered"):
        add_entry(path, entry)
