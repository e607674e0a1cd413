"""sap_core.eval_size: the full held-out sets on a GPU, the documented cap on CPU."""

from __future__ import annotations

import pytest

from sap_core.eval_size import CPU_MAX_PROMPTS, default_max_prompts
from sap_core.prompt_sets import default_prompt_sets


def test_gpu_evaluates_everything_cpu_the_cap() -> None:
    assert default_max_prompts("cuda") is None
    assert default_max_prompts("cuda:3") is None
    assert default_max_prompts("cpu") == CPU_MAX_PROMPTS
    # The cap is a real subset of the harmful set and small enough to stay minutes on CPU.
    harmful, benign = default_prompt_sets()
    assert len(harmful.subset(CPU_MAX_PROMPTS).prompts) == CPU_MAX_PROMPTS < len(harmful.prompts)
    assert len(benign.subset(CPU_MAX_PROMPTS).prompts) == min(CPU_MAX_PROMPTS, len(benign.prompts))


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ValueError, match="device"):
        default_max_prompts("tpu")
