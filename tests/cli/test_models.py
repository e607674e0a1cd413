"""`safetune models add|check|list` against real model folders (random Llama and Qwen2)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from safetune.base_models import reload_registry
from safetune.config import get_settings
from tests.model_folders import INST_TEMPLATE, save_random_model


@pytest.fixture
def models_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "etc" / "models.yaml"
    monkeypatch.setenv("SAFETUNE_MODELS_FILE", str(path))
    get_settings.cache_clear()
    reload_registry()
    yield path
    monkeypatch.delenv("SAFETUNE_MODELS_FILE")
    get_settings.cache_clear()
    reload_registry()


def test_add_checks_then_writes_and_list_and_check_see_it(tmp_path: Path, models_file: Path) -> None:
    runner = CliRunner()
    qwen = save_random_model(tmp_path / "qwen", "qwen2", tokenizer_template=INST_TEMPLATE)
    llama = save_random_model(tmp_path / "llama", "llama", tokenizer_template=None)

    added = runner.invoke(app, ["models", "add", "qwen-small", "--path", str(qwen), "--max-seq-len", "512"])
    assert added.exit_code == 0, added.output
    # The tokenizer has no template of its own: refused, and the file is left as it was.
    refused = runner.invoke(
        app, ["models", "add", "llama-small", "--path", str(llama), "--max-seq-len", "256"]
    )
    assert refused.exit_code == 1
    assert "entry 'llama-small' field 'chat_template'" in refused.stderr
    fixed = runner.invoke(
        app,
        [
            "models",
            "add",
            "llama-small",
            "--path",
            str(llama),
            "--chat-template",
            "zephyr",
            "--max-seq-len",
            "256",
        ],
    )
    assert fixed.exit_code == 0, fixed.output
    too_long = runner.invoke(
        app, ["models", "add", "llama-long", "--path", str(llama), "--chat-template", "chatml"]
    )
    assert too_long.exit_code == 1 and "field 'max_seq_len'" in too_long.stderr

    written = yaml.safe_load(models_file.read_text())["models"]
    assert [(m["name"], m["max_seq_len"]) for m in written] == [("qwen-small", 512), ("llama-small", 256)]
    assert written[1]["chat_template"] == "zephyr" and written[0]["path"] == str(qwen.resolve())

    checked = runner.invoke(app, ["models", "check"])
    assert checked.exit_code == 0, checked.output
    assert (
        "ok  qwen-small  ['Qwen2ForCausalLM']" in checked.stdout
        and "2 models-file entries passed" in checked.stdout
    )
    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "250"})
    assert (
        "qwen-small" in listed.stdout
        and "llama-small" in listed.stdout
        and "tiny-random-llama" in listed.stdout
    )

    (llama / "model.safetensors").unlink()
    reload_registry()
    broken = runner.invoke(app, ["models", "check"])
    assert broken.exit_code == 1 and "entry 'llama-small' field 'path'" in broken.stderr
