"""One JWK Set fetcher for SMART client keys and EHR JWTs: one cache that follows Cache-Control,
rotation without hammering, the outbound guard in production; and the CRD FHIR-server fallback
behind the same guard. Key servers and EHR FHIR servers are external: mocked with respx."""

from __future__ import annotations

import httpx
import pytest
import respx

from cds_hooks.prefetch import Fetcher, FetchFailed
from server.auth.jwks import JWKSFetcher, JWKSFetchError

PUBLIC = "https://93.184.215.14"  # a public address: the guard needs no name resolution for it
JWKS = {"keys": [{"kty": "EC", "crv": "P-384", "kid": "k1", "x": "AA", "y": "AA"}]}


def test_smart_clients_and_cds_hooks_share_one_fetcher(server):
    services = server.app.state.precert.services
    assert services["auth"].tokens.jwks is services["crd"].verifier.jwks is services["jwks"]
    assert services["jwks"].guarded is False  # the sandbox reaches loopback key servers


async def test_a_jwk_set_is_cached_as_its_cache_control_says():
    fetcher = JWKSFetcher()
    with respx.mock() as mock:
        cached = mock.get(f"{PUBLIC}/cached.json").respond(json=JWKS, headers={"Cache-Control": "max-age=600"})
        uncached = mock.get(f"{PUBLIC}/uncached.json").respond(json=JWKS, headers={"Cache-Control": "no-store"})
        for _ in range(3):
            assert await fetcher.get(f"{PUBLIC}/cached.json") == JWKS
            assert await fetcher.get(f"{PUBLIC}/uncached.json") == JWKS
    assert cached.call_count == 1 and uncached.call_count == 3
    await fetcher.close()


async def test_an_unknown_kid_fetches_again_but_not_sooner_than_the_minimum_interval():
    fetcher = JWKSFetcher()
    url = f"{PUBLIC}/rotating.json"
    with respx.mock() as mock:
        route = mock.get(url).respond(json=JWKS)
        await fetcher.get(url)
        await fetcher.get(url, refresh=True, refresh_min=30)
        assert route.call_count == 1
        fetcher.age(url, 31)
        await fetcher.get(url, refresh=True, refresh_min=30)
        assert route.call_count == 2
    await fetcher.close()


async def test_a_key_server_failing_briefly_keeps_the_last_good_set():
    fetcher = JWKSFetcher()
    url = f"{PUBLIC}/flaky.json"
    with respx.mock() as mock:
        route = mock.get(url).respond(json=JWKS)
        await fetcher.get(url)
        route.respond(503)
        fetcher.age(url, 301)  # expired, still younger than max_seconds
        assert await fetcher.get(url) == JWKS
        fetcher.forget(url)
        with pytest.raises(JWKSFetchError, match="HTTP 503"):
            await fetcher.get(url)
    await fetcher.close()


@pytest.mark.parametrize("response,reason", [
    (httpx.Response(200, json={"not": "a jwk set"}), "not a JWK Set"),
    (httpx.Response(200, content=b"<html>"), "not JSON"),
    (httpx.Response(200, json={"keys": [{"kid": "x" * 70_000}]}), "larger than"),
    (httpx.Response(302, headers={"Location": "http://10.0.0.1/jwks.json"}), "HTTP 302"),
])
async def test_what_is_not_a_jwk_set_is_refused_with_the_reason(response, reason):
    fetcher = JWKSFetcher()
    with respx.mock() as mock:
        mock.get(f"{PUBLIC}/odd.json").mock(return_value=response)
        with pytest.raises(JWKSFetchError, match=reason):
            await fetcher.get(f"{PUBLIC}/odd.json")
    await fetcher.close()


@pytest.mark.parametrize("url", ["https://127.0.0.1/jwks.json", "https://10.0.0.5/jwks.json", "https://localhost./jwks.json",
                                 "https://169.254.169.254/latest/meta-data"])
async def test_in_production_a_key_server_on_the_payers_network_is_not_fetched(url):
    fetcher = JWKSFetcher(guarded=True)
    with respx.mock(assert_all_called=False) as mock:
        route = mock.get(url).respond(json=JWKS)
        with pytest.raises(JWKSFetchError, match="not fetched"):
            await fetcher.get(url)
    assert not route.called
    await fetcher.close()


async def test_in_production_an_allow_listed_internal_key_server_is_fetched(monkeypatch):
    monkeypatch.setenv("PRECERT_OUTBOUND_ALLOW", "10.1.0.0/16")
    fetcher = JWKSFetcher(guarded=True)
    with respx.mock() as mock:
        mock.get("https://10.1.2.3/jwks.json").respond(json=JWKS)
        assert await fetcher.get("https://10.1.2.3/jwks.json") == JWKS
    await fetcher.close()


async def test_in_production_the_crd_fhir_server_fallback_is_guarded_too():
    async with httpx.AsyncClient() as http:
        with respx.mock(assert_all_called=False) as mock:
            internal = mock.get(url__startswith="http://10.0.0.5/").respond(json={"resourceType": "Patient", "id": "p"})
            public = mock.get(f"{PUBLIC}/fhir/Patient/p").respond(json={"resourceType": "Patient", "id": "p"})
            with pytest.raises(FetchFailed, match="refused"):
                await Fetcher(http, "http://10.0.0.5/fhir", "t", guarded=True).get("Patient/p")
            # A query naming an absolute URL is checked as well, not only the base.
            with pytest.raises(FetchFailed, match="refused"):
                await Fetcher(http, f"{PUBLIC}/fhir", "t", guarded=True).get("http://10.0.0.5/fhir/Patient/p")
            assert (await Fetcher(http, f"{PUBLIC}/fhir", "t", guarded=True).get("Patient/p"))["id"] == "p"
            assert not internal.called and public.called
            # The sandbox reaches an EHR on loopback or a private network (a developer's own machine).
            assert (await Fetcher(http, "http://10.0.0.5/fhir", "t").get("Patient/p"))["id"] == "p"
