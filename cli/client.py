"""HTTP client for the CLI: base URL and key from options/env, API errors as one clear line + exit 1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOption = Annotated[str, typer.Option("--url", envvar="SAFETUNE_URL", help="Base URL of the safetune API.")]
ApiKeyOption = Annotated[
    str | None,
    typer.Option("--api-key", envvar="SAFETUNE_API_KEY", help="API key (Bearer token).", show_default=False),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def format_api_error(response: httpx.Response) -> str:
    """Render the API envelope {"error": {code, message, param, line}} as a single line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        text = response.text.strip().replace("\n", " ")[:200]
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"
    where = []
    if error.get("line") is not None:
        where.append(f"line {error['line']}")
    if error.get("param"):
        where.append(f"param {error['param']}")
    location = f" ({', '.join(where)})" if where else ""
    return f"{error.get('code', 'error')}{location}: {error.get('message', '')} [HTTP {response.status_code}]"


class ApiClient:
    """Thin wrapper over httpx that turns transport and API errors into CLI failures."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float = 60.0) -> None:
        if not api_key:
            fail(
                "no API key: pass --api-key or set SAFETUNE_API_KEY (create one with `safetune keys create`)"
            )
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the safetune API at {self.url}: {exc}")
        if response.is_error:
            fail(format_api_error(response))
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs).json()

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    fail(format_api_error(response))
                yield response
        except httpx.TransportError as exc:
            fail(f"cannot reach the safetune API at {self.url}: {exc}")


@contextmanager
def api_client(url: str, api_key: str | None) -> Iterator[ApiClient]:
    client = ApiClient(url, api_key)
    try:
        yield client
    finally:
        client.close()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))
