"""Pagination cursors as typed query parameters: OpenAPI shows the same id shapes the server accepts.

Every row id is ``<prefix>-<32 hex>`` (safetune.models.new_id), so a cursor of any other shape is a
422 from validation, before any lookup; a well-formed id that names no row of the tenant is a 422
"unknown pagination cursor" from the route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query


def id_pattern(prefix: str) -> str:
    return rf"^{prefix}-[0-9a-f]{{32}}$"


JobCursor = Annotated[
    str | None, Query(pattern=id_pattern("ftjob"), description="id of the last job of the previous page")
]
CheckpointCursor = Annotated[
    str | None, Query(pattern=id_pattern("ftckpt"), description="id of the last checkpoint seen")
]
FileCursor = Annotated[
    str | None, Query(pattern=id_pattern("file"), description="id of the last file of the previous page")
]
# OpenAI's event ids are "ftevent-<n>"; a bare number is accepted too. At most 10 digits: the
# route still checks the number fits an int4 (api.deps.clean_int).
OpenAIEventCursor = Annotated[
    str | None,
    Query(pattern=r"^(ftevent-)?[0-9]{1,10}$", description="id of the last event seen (ftevent-<n>)"),
]
