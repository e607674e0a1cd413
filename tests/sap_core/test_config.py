from __future__ import annotations

import json

import pytest

from sap_core.config import AnchorConfig, EmaConfig, LoraSpec, SapConfig, TrainConfig


def test_round_trip_through_json() -> None:
    cfg = TrainConfig(
        guard="ema",
        max_steps=7,
        lora=LoraSpec(r=4, target_modules=("q_proj",)),
        sap=SapConfig(probe_layers=(1, 2), lagged_probe=True),
        ema=EmaConfig(decay=0.9),
    )
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.sap.probe_layers == (1, 2) and again.lora.target_modules == ("q_proj",)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown keys \\['bogus'\\]"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="sap: unknown keys"):
        TrainConfig.from_dict({"sap": {"radius": 0.1, "nope": 2}})


@pytest.mark.parametrize(
    ("factory", "field_name"),
    [
        (lambda: LoraSpec(r=0), "r=0"),
        (lambda: LoraSpec(dropout=1.0), "dropout=1.0"),
        (lambda: SapConfig(refresh_every=0), "refresh_every=0"),
        (lambda: SapConfig(probe_layers=(-1,)), "probe_layers=(-1,)"),
        (lambda: EmaConfig(decay=1.5), "decay=1.5"),
        (lambda: TrainConfig(guard="magic"), "guard='magic'"),  # type: ignore[arg-type]
        (lambda: TrainConfig(lr_schedule="step"), "lr_schedule='step'"),  # type: ignore[arg-type]
        (lambda: TrainConfig(batch_size=0), "batch_size=0"),
        (lambda: TrainConfig(warmup_ratio=1.0), "warmup_ratio=1.0"),
    ],
)
def test_validation_names_field_and_value(factory: object, field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name.replace("(", "\\(").replace(")", "\\)")):
        factory()  # type: ignore[operator]


def test_every_field_has_help() -> None:
    import dataclasses

    for cls in (LoraSpec, SapConfig, EmaConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"


def test_anchor_benign_share_defaults_to_half_the_batch_and_an_explicit_value_wins() -> None:
    assert AnchorConfig().benign_per_batch == 2  # batch 4, the frontier's measured default
    assert AnchorConfig(batch_size=2).benign_per_batch == 1
    assert AnchorConfig(batch_size=1).benign_per_batch == 0
    assert AnchorConfig(batch_size=4, benign_per_batch=0).benign_per_batch == 0
    with pytest.raises(ValueError, match="benign_per_batch"):
        AnchorConfig(batch_size=2, benign_per_batch=2)
