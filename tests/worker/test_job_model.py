"""A job's model as its registry entry says: template, LoRA targets and probe layers by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from safetune.base_models import REGISTRY, file_model_info
from safetune.models_file import ModelEntry
from sap_core.modeling import load_base_model
from tests.model_folders import INST_TEMPLATE, save_random_model
from worker.job_model import JobModel, apply_model_defaults
from worker.spec_mapping import train_config_from_spec

ALL_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> JobModel:
    folder = save_random_model(tmp_path_factory.mktemp("q"), "qwen2", tokenizer_template=INST_TEMPLATE)
    entry = ModelEntry(name="q", path=folder, max_seq_len=256, probe_layers=[1])
    model, tokenizer = load_base_model(folder, "cpu")
    record = {"source": "tokenizer", "text": INST_TEMPLATE, "sha256": "-"}
    return JobModel(file_model_info(entry, set(REGISTRY)), folder, model, tokenizer, record)


def config_for(spec: dict[str, object]):  # type: ignore[no-untyped-def]
    return train_config_from_spec(spec, "sap")


def test_a_registered_model_defaults_to_every_linear_layer_and_its_probe_layers(qwen: JobModel) -> None:
    config = apply_model_defaults(config_for({}), {}, qwen)
    assert set(config.lora.target_modules) == ALL_LINEAR and config.sap.probe_layers == (1,)


def test_what_the_job_names_wins(qwen: JobModel) -> None:
    spec = {"hyperparameters": {"target_modules": ["q_proj"]}, "sap": {"probe_layers": [0]}}
    config = apply_model_defaults(config_for(spec), spec, qwen)
    assert config.lora.target_modules == ("q_proj",) and config.sap.probe_layers == (0,)


def test_the_entry_s_own_targets_replace_all_linear(qwen: JobModel, tmp_path: Path) -> None:
    entry = qwen.info.entry.model_copy(update={"lora_target_modules": ["up_proj", "down_proj"]})  # type: ignore[union-attr]
    custom = JobModel(file_model_info(entry, set(REGISTRY)), qwen.model_dir, qwen.model, qwen.tokenizer, {})
    assert apply_model_defaults(config_for({}), {}, custom).lora.target_modules == ("up_proj", "down_proj")


def test_built_ins_keep_sap_core_defaults(qwen: JobModel) -> None:
    builtin = JobModel(REGISTRY["tiny-random-llama"], qwen.model_dir, qwen.model, qwen.tokenizer, {})
    config = apply_model_defaults(config_for({}), {}, builtin)
    assert (
        config.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
        and config.sap.probe_layers is None
    )
