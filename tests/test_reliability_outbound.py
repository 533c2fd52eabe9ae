"""In production a rest-hook endpoint may not reach the payer's own network, and no subscriber
sets connection-level headers on the requests Precert sends."""

from __future__ import annotations

import asyncio

import pytest

from server.fhir.errors import FHIRError
from server.outbound import OutboundRefused, check_destination
from server.subscriptions.model import check_subscription
from tests.pas_support import pas_subscription


@pytest.mark.parametrize("endpoint", [
    "https://127.0.0.1/notify", "https://localhost:8443/notify", "https://10.0.0.5/notify", "https://169.254.169.254/latest",
    "https://[::1]/notify", "https://[::ffff:127.0.0.1]/notify", "https://0.0.0.0/notify", "https://192.168.1.1/notify",
])
def test_production_refuses_a_rest_hook_on_an_internal_address(endpoint):
    with pytest.raises(FHIRError) as caught:
        check_subscription(pas_subscription(endpoint, "1234567893"), production=True)
    assert caught.value.status == 400
    assert any("not allowed" in i["diagnostics"] for i in caught.value.issues)


def test_the_sandbox_still_accepts_a_loopback_rest_hook():
    check_subscription(pas_subscription("http://127.0.0.1:9/notify", "1234567893"), production=False)


def test_an_operator_can_allow_list_an_internal_network(monkeypatch):
    monkeypatch.setenv("PRECERT_OUTBOUND_ALLOW", "10.1.0.0/16, hooks.internal")
    check_subscription(pas_subscription("https://10.1.2.3/notify", "1234567893"), production=True)
    asyncio.run(check_destination("https://hooks.internal/notify"))


def test_a_host_name_resolving_to_loopback_is_refused_when_the_request_is_sent():
    with pytest.raises(OutboundRefused):
        asyncio.run(check_destination("https://localhost./notify"))


@pytest.mark.parametrize("header", ["Host: internal", "Transfer-Encoding: chunked", "Connection: upgrade", "Content-Length: 1", "X-Forwarded-For: 10.0.0.1"])
def test_a_subscriber_may_not_set_connection_level_headers(header):
    sub = pas_subscription("https://hooks.example.org/notify", "1234567893")
    sub["channel"]["header"] = [header]
    with pytest.raises(FHIRError) as caught:
        check_subscription(sub, production=False)
    assert caught.value.status == 400
