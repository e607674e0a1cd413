"""The service's adapter archive format is exactly what sap_core writes."""

from __future__ import annotations

from safetune.adapter_format import ADAPTER_FILES, TOKENIZER_FILES


def test_the_archive_holds_the_files_sap_core_writes() -> None:
    from sap_core import adapters  # the library cannot import safetune, so it keeps its own copy

    assert ADAPTER_FILES == adapters.ADAPTER_FILES
    assert TOKENIZER_FILES == adapters.TOKENIZER_FILES
