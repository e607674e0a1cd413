"""`safetune models list|check|add`: the registry (built-ins + SAFETUNE_MODELS_FILE) from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from cli.client import fail

console = Console()
models_app = typer.Typer(help="Base models this server can fine-tune.", no_args_is_help=True)


def _registry() -> dict[str, object]:
    from safetune.base_models import registry
    from safetune.models_file import ModelsFileError

    try:
        return dict(registry())
    except ModelsFileError as exc:
        fail(str(exc))


@models_app.command("list")
def list_models() -> None:
    """Registered base models and whether each folder is present (built-ins: in SAFETUNE_MODEL_CACHE)."""
    from safetune.base_models import BaseModelInfo
    from safetune.config import get_settings

    cache = get_settings().model_cache
    table = Table(
        "name",
        "source",
        "layers",
        "max seq",
        "in cache",
        "template",
        "description",
        title=f"model cache: {cache}",
    )
    for info in _registry().values():
        assert isinstance(info, BaseModelInfo)
        # The worker's model store treats a folder with config.json as built.
        present = (info.local_dir(cache) / "config.json").exists()
        table.add_row(
            info.name,
            info.source,
            str(info.num_layers),
            str(info.max_seq_len),
            "[green]yes[/]" if present else "no",
            info.chat_template,
            info.description,
        )
    console.print(table)


@models_app.command("check")
def check_models() -> None:
    """Load every models-file entry's tokenizer and config and run the start-up checks the worker runs."""
    from safetune.models_file import ModelsFileError
    from worker.job_model import check_registered_models

    _registry()
    try:
        found = check_registered_models()
    except ModelsFileError as exc:
        fail(str(exc))
    for row in found:
        typer.echo(
            f"ok  {row['name']}  {row['architecture']}  template sha256 {row['chat_template_sha256'][:12]}"
        )
    typer.echo(f"{len(found)} models-file entr{'y' if len(found) == 1 else 'ies'} passed")


@models_app.command("add")
def add_model(
    name: Annotated[str, typer.Argument(help="Name jobs use in base_model.")],
    path: Annotated[Path, typer.Option("--path", help="Local Hugging Face folder.")],
    max_seq_len: Annotated[int, typer.Option(help="Longest training sequence.")] = 2048,
    chat_template: Annotated[
        str, typer.Option(help="tokenizer | chatml | zephyr | llama2 | FILE.jinja")
    ] = "tokenizer",
    target_modules: Annotated[
        list[str] | None, typer.Option("--target-module", help="LoRA target (repeat); default all linear")
    ] = None,
    probe_layers: Annotated[
        list[int] | None, typer.Option("--probe-layer", help="SAP probe layer (repeat)")
    ] = None,
    dtype: Annotated[str, typer.Option(help="auto | bfloat16 | float16 | float32 (GPU weights)")] = "auto",
    trust_remote_code: Annotated[bool, typer.Option(help="Run the folder's own model code.")] = False,
    aligned_from: Annotated[str | None, typer.Option(help="Registered base it was aligned from.")] = None,
) -> None:
    """Check the folder (cheap and heavy checks) and append the entry to SAFETUNE_MODELS_FILE."""
    from pydantic import ValidationError

    from safetune.base_models import BUILTIN_NAMES, file_model_info, reload_registry
    from safetune.config import get_settings
    from safetune.models_file import ModelEntry, ModelsFileError, add_entry
    from sap_core.model_check import ModelCheckFailed, ModelCheckSpec, check_model

    models_file = get_settings().models_file
    if models_file is None:
        fail("set SAFETUNE_MODELS_FILE to the YAML file to write")
    # The first `add` creates the file; elsewhere a configured but missing file fails closed.
    known = set(_registry()) if models_file.is_file() else set(BUILTIN_NAMES)
    if name in known:
        fail(f"{name!r} is already registered")
    try:
        entry = ModelEntry(
            name=name,
            path=path.resolve(),
            max_seq_len=max_seq_len,
            chat_template=str(Path(chat_template).resolve())
            if chat_template.endswith(".jinja")
            else chat_template,
            lora_target_modules=target_modules or None,
            probe_layers=probe_layers or None,
            dtype=_dtype(dtype),
            trust_remote_code=trust_remote_code,
            aligned_from=aligned_from,
        )
        file_model_info(entry, known)
        check_model(ModelCheckSpec(entry.path, max_seq_len, entry.chat_template, trust_remote_code))
        add_entry(models_file, entry)
    except ValidationError as exc:
        fail(f"entry {name!r}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    except ModelCheckFailed as exc:
        fail(str(ModelsFileError(name, exc.field, exc.problem)))
    except ModelsFileError as exc:
        fail(str(exc))
    reload_registry()
    typer.echo(f"added {name} to {models_file}")


def _dtype(value: str) -> Literal["auto", "float32", "bfloat16", "float16"]:
    if value not in ("auto", "float32", "bfloat16", "float16"):
        fail(f"--dtype {value!r}: use auto, bfloat16, float16 or float32")
    return value  # type: ignore[return-value]
