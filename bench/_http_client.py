"""A lean keep-alive HTTP/1.1 load generator for the latency bench: N connections on one event loop.

The bench shares the machine with the server it measures, so the client's own CPU cost per request
must stay well below the server's. Sixteen threads each driving an httpx.Client cost about as much
CPU as a cheap route does on the server side, which would cap the GET /healthz baseline at the
client's speed and flatter the ratio. Here each request is serialised once, up front, and a response
is read as "headers, then Content-Length bytes": enough for our JSON routes, a few µs of Python each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


@dataclass(frozen=True)
class Call:
    endpoint: str  # the label in the results table, e.g. "GET /jobs/{id}"
    raw: bytes  # the whole request as it goes on the wire
    expect: int  # the status that counts as success


def build_call(endpoint: str, expect: int, request: httpx.Request) -> Call:
    """Serialise an httpx.Request (which encodes multipart bodies and sets Host/Content-Length)."""
    body = request.read()
    target = request.url.raw_path.decode("ascii")
    head = [f"{request.method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in request.headers.items()]
    return Call(endpoint, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body, expect)


@dataclass
class PhaseResult:
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length (chunked responses are not supported here)")
    return status, await reader.readexactly(length)


async def _run(
    base_url: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    calls: Iterator[Call],
    on_body: Callable[[Call, bytes], None] | None,
) -> PhaseResult:
    url = urlsplit(base_url)
    result = PhaseResult()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            while (now := loop.time()) < stop_at:
                call = next(calls)
                started = time.perf_counter()
                try:
                    status, body = await _exchange(reader, writer, call.raw)
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    result.errors.append(f"{call.endpoint}: {type(exc).__name__}: {exc}")
                    return
                elapsed = time.perf_counter() - started
                if now < measure_from:
                    continue  # warm-up: pools fill, caches warm, nothing recorded
                if status != call.expect:
                    result.errors.append(f"{call.endpoint}: {status} {body[:200]!r}")
                    continue
                result.samples.setdefault(call.endpoint, []).append(elapsed)
                if on_body is not None:
                    on_body(call, body)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    # Requests in flight at stop_at finish after it; the wall clock counts them too.
    result.wall_seconds = max(loop.time() - measure_from, 1e-9)
    return result


def run_phase(
    base_url: str,
    concurrency: int,
    seconds: float,
    calls: Iterator[Call],
    *,
    warmup: float = 1.0,
    on_body: Callable[[Call, bytes], None] | None = None,
) -> PhaseResult:
    """`concurrency` keep-alive connections send `calls` back to back for `warmup` + `seconds`."""
    return asyncio.run(_run(base_url, concurrency, seconds, warmup, calls, on_body))
