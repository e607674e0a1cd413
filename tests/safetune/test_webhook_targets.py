"""check_webhook_url: only public addresses receive webhooks, unless SAFETUNE_WEBHOOK_ALLOWED_HOSTS
says otherwise. Literals and `localhost` go through the real resolver; the two cases that need a DNS
answer this machine cannot give (a name for a private address, a rebinding answer) replace
socket.getaddrinfo with a fixed answer."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import ValidationError

from safetune.config import Settings
from safetune.webhook_targets import WebhookHostUnresolved, WebhookTargetRejected, check_webhook_url

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",  # loopback spelled as IPv4-mapped IPv6
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://100.100.100.200/hook",  # shared address space (another metadata service)
        "http://0.0.0.0:8000/hook",
        "http://localhost:8000/hook",  # a name that resolves to loopback
        "http://[fd00:ec2::254]/hook",  # IPv6 metadata (unique local)
    ],
)
def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetRejected, match="not a public address"):
        check_webhook_url(url, settings())


def test_public_addresses_are_accepted_and_pinned() -> None:
    target = check_webhook_url(f"https://{PUBLIC_V4}:8443/hooks/a?x=1", settings())
    assert (target.host, target.address, target.host_header) == (PUBLIC_V4, PUBLIC_V4, f"{PUBLIC_V4}:8443")
    assert target.pinned_url() == f"https://{PUBLIC_V4}:8443/hooks/a?x=1"
    v6 = check_webhook_url(f"http://[{PUBLIC_V6}]/h", settings())
    assert v6.pinned_url() == f"http://[{PUBLIC_V6}]/h"


def fixed_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_resolves_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_dns(
        monkeypatch, {"hooks.internal.example": ["10.1.2.3"], "rebind.example": [PUBLIC_V4, "127.0.0.1"]}
    )
    with pytest.raises(WebhookTargetRejected, match="resolves to 10.1.2.3"):
        check_webhook_url("https://hooks.internal.example/h", settings())
    # Every answer must be public, or a client could be steered to the private one.
    with pytest.raises(WebhookTargetRejected, match="resolves to 127.0.0.1"):
        check_webhook_url("https://rebind.example/h", settings())

    # The same names are fine once allowed, by name or by network; the request is pinned to the answer.
    allowed = check_webhook_url(
        "https://hooks.internal.example/h", settings(webhook_allowed_hosts="10.0.0.0/8")
    )
    assert (allowed.host, allowed.address) == ("hooks.internal.example", "10.1.2.3")
    assert allowed.pinned_url() == "https://10.1.2.3/h" and allowed.host_header == "hooks.internal.example"
    by_name = settings(webhook_allowed_hosts="receiver.test, hooks.internal.example")
    assert check_webhook_url("http://hooks.internal.example:81/h", by_name).address == "10.1.2.3"


def test_allowed_receivers_for_tests_and_on_prem() -> None:
    local = settings(webhook_allowed_hosts="127.0.0.1, [::1]")
    assert check_webhook_url("http://127.0.0.1:8080/hook", local).address == "127.0.0.1"
    assert check_webhook_url("http://[::1]:8080/hook", local).address == "::1"
    with pytest.raises(WebhookTargetRejected):  # an allowed address does not open its neighbours
        check_webhook_url("http://169.254.169.254/", local)
    assert (
        check_webhook_url("http://localhost:1/h", settings(webhook_allowed_hosts="LOCALHOST")).host
        == "localhost"
    )


def test_production_requires_https_and_bad_urls_are_refused() -> None:
    production = settings(environment="production")
    with pytest.raises(WebhookTargetRejected, match="must use https"):
        check_webhook_url(f"http://{PUBLIC_V4}/h", production)
    assert check_webhook_url(f"https://{PUBLIC_V4}/h", production).address == PUBLIC_V4
    with pytest.raises(WebhookTargetRejected, match="credentials"):
        check_webhook_url(f"https://user:pw@{PUBLIC_V4}/h", settings())
    with pytest.raises(WebhookHostUnresolved):
        check_webhook_url("https://no-such-host.invalid/h", settings())
    with pytest.raises(WebhookTargetRejected):
        check_webhook_url("ftp://example.com/h", settings())


def test_allowed_hosts_setting_is_validated_at_start_up() -> None:
    with pytest.raises(ValidationError, match="webhook_allowed_hosts"):
        settings(webhook_allowed_hosts="10.0.0.0/8, not a host!")
