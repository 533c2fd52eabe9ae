"""PAS version negotiation: one endpoint answers 2.0.1 and 2.2.1 clients, each in its own version."""

from __future__ import annotations

import copy

import orjson
import pytest

from tests.pas_support import FHIR, claim_response, entry, pas_request, submit
from tests.support import package_examples

SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
ONLY_221_IN_RESPONSES = (SD + "extension-claimResponseReviewer", SD + "extension-TransmissionIdentifiers")
REVIEWER = SD + "extension-claimResponseReviewer"


def urls(value, out=None) -> set[str]:
    out = set() if out is None else out
    if isinstance(value, dict):
        if isinstance(value.get("url"), str):
            out.add(value["url"])
        for v in value.values():
            urls(v, out)
    elif isinstance(value, list):
        for v in value:
            urls(v, out)
    return out


def request_examples(version: str) -> list[str]:
    examples = package_examples(f"hl7.fhir.us.davinci-pas-{version}")
    return sorted(
        name for name, b in examples.items()
        if name.startswith("Bundle-") and (b.get("entry") or [{}])[0].get("resource", {}).get("resourceType") == "Claim"
        and b["entry"][0]["resource"].get("use") == "preauthorization" and "Inquiry" not in name
    )


def kit_201_shape(bundle: dict) -> dict:
    """A 2.0.1 request as the 2.0.1 test kit sends it: profiles without a version."""
    out = copy.deepcopy(bundle)

    def strip(value):
        if isinstance(value, dict):
            meta = value.get("meta")
            if isinstance(meta, dict) and meta.get("profile"):
                meta["profile"] = [p.split("|")[0] for p in meta["profile"]]
            for v in value.values():
                strip(v)
        elif isinstance(value, list):
            for v in value:
                strip(v)

    strip(out)
    return out


@pytest.mark.parametrize("name", request_examples("2.0.1"))
def test_unversioned_2_0_1_examples_get_2_0_1_answers(client, name):
    body = submit(client, kit_201_shape(pas_request("2.0.1", name))).json()
    assert body["resourceType"] == "Bundle"
    assert not urls(body) & set(ONLY_221_IN_RESPONSES), "no extension that 2.0.1 does not define"


@pytest.mark.parametrize("name", request_examples("2.2.1"))
def test_2_2_1_examples_get_2_2_1_answers(client, name):
    body = submit(client, pas_request("2.2.1", name)).json()
    cr = claim_response(body)
    if cr["outcome"] != "error":
        assert REVIEWER in urls(cr), "2.2.1 answers say whether a person reviewed"


def test_a_versioned_profile_decides_over_other_evidence(client):
    request = pas_request("2.2.1", member="PCM000001")  # carries TransmissionIdentifiers (2.2.1 only)
    request["meta"] = {"profile": [SD + "profile-pas-request-bundle|2.0.1"]}
    cr = claim_response(submit(client, request).json())
    assert REVIEWER not in urls(cr) and SD + "extension-TransmissionIdentifiers" not in urls(cr)


def test_a_2_2_1_only_extension_makes_a_2_2_1_answer_even_without_member_type(client):
    request = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json", member="PCM000001")
    for ident in entry(request, "Coverage")["identifier"]:
        ident.pop("type", None)  # 2.0.1 evidence ...
    entry(request, "Claim").setdefault("extension", []).append(  # ... and 2.2.1 evidence: no evidence
        {"url": SD + "extension-TransmissionIdentifiers", "extension": [
            {"url": "applicationSenderCode", "valueString": "SENDER"}, {"url": "applicationReceiverCode", "valueString": "PRECERT01"}]})
    cr = claim_response(submit(client, request).json())
    assert REVIEWER in urls(cr), "contradicting evidence falls back to the server default, 2.2.1"


def test_a_request_without_a_typed_member_identifier_is_answered_in_2_0_1(client):
    request = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json", member="PCM000001")
    for ident in entry(request, "Coverage")["identifier"]:
        ident.pop("type", None)
    cr = claim_response(submit(client, request).json())
    assert REVIEWER not in urls(cr)


def test_the_pinned_2_0_1_base_answers_in_2_0_1(client):
    request = pas_request("2.2.1", member="PCM000001")
    r = client.post("/fhir/pas-2.0.1/Claim/$submit", content=orjson.dumps(request), headers=FHIR)
    assert r.status_code == 200, r.text
    assert not urls(claim_response(r.json())) & set(ONLY_221_IN_RESPONSES)


def test_the_pinned_2_2_1_base_answers_in_2_2_1(client):
    request = kit_201_shape(pas_request("2.2.1", member="PCM000001"))
    r = client.post("/fhir/pas-2.2.1/Claim/$submit", content=orjson.dumps(request), headers=FHIR)
    assert r.status_code == 200, r.text
    assert REVIEWER in urls(claim_response(r.json()))


def test_the_pinned_2_2_1_base_checks_a_request_against_the_2_2_1_profiles(client):
    """A 2.0.1 request sent to the 2.2.1 base is checked as 2.2.1, and refused naming what 2.2.1 requires."""
    request = kit_201_shape(pas_request("2.0.1", member="PCM000001"))
    r = client.post("/fhir/pas-2.2.1/Claim/$submit", content=orjson.dumps(request), headers=FHIR)
    assert r.status_code == 400, r.text
    assert any("memberid" in i["diagnostics"] for i in r.json()["issue"])


def test_a_pinned_base_of_an_unknown_version_is_404(client):
    r = client.post("/fhir/pas-9.9.9/Claim/$submit", content=orjson.dumps(pas_request("2.2.1")), headers=FHIR)
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


def test_a_2_0_1_kit_inquiry_is_answered_with_a_bundle(client):
    from tests.test_pas_inquire_update import inquiry_for

    request = kit_201_shape(pas_request("2.0.1", member="PCM000012"))
    decided = submit(client, request).json()
    r = submit(client, kit_201_shape(inquiry_for(request, "2.0.1")), "/fhir/Claim/$inquire")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle"
    assert body["entry"][0]["resource"]["id"] == claim_response(decided)["id"]


def test_a_client_registered_for_2_0_1_gets_2_0_1_when_its_request_does_not_say(harness, http):
    cid, key = harness.register(npi="1234567893", pas_version="2.0.1")
    headers = {**FHIR, "Authorization": f"Bearer {harness.token(cid, key, 'system/*.cruds')}"}
    request = pas_request("2.2.1", "Bundle-HomecareAuthorizationBundleExample.json", member="PCM000001")
    cr = claim_response(http.post("/fhir/Claim/$submit", content=orjson.dumps(request), headers=headers).json())
    assert REVIEWER not in urls(cr)
    # The request's own evidence still decides over the client's default.
    request = pas_request("2.2.1", member="PCM000001")
    cr = claim_response(http.post("/fhir/Claim/$submit", content=orjson.dumps(request), headers=headers).json())
    assert REVIEWER in urls(cr)


def test_registering_an_unknown_pas_version_is_refused(harness, http):
    from server.auth.testing import ClientKey

    r = http.post("/admin/auth/clients", headers=harness.admin_headers,
                  json={"name": "EHR", "npi": "1234567893", "jwks": ClientKey.generate("ES384").jwks, "pas_version": "3.0"})
    assert r.status_code == 400
    assert "pas_version" in r.text


def test_an_inquiry_answers_in_one_version_when_the_member_has_requests_in_both(client):
    """Requests answered in 2.0.1 are left out of a 2.2.1 inquiry's answer (and the other way round),
    so the answer meets one version's inquiry-response profile."""
    from tests.test_pas_inquire_update import inquiry_for, returned

    old = kit_201_shape(pas_request("2.0.1", member="PCM000007"))
    r_old = client.post("/fhir/pas-2.0.1/Claim/$submit", content=orjson.dumps(old), headers=FHIR)
    new = pas_request("2.2.1", member="PCM000007")
    r_new = client.post("/fhir/pas-2.2.1/Claim/$submit", content=orjson.dumps(new), headers=FHIR)
    assert r_old.status_code == 200 and r_new.status_code == 200, (r_old.text, r_new.text)
    r = submit(client, inquiry_for(new, "2.2.1"), "/fhir/Claim/$inquire")
    assert r.status_code == 200, r.text
    ids = {claim_response(b)["id"] for b in returned(r.json())}
    assert claim_response(r_new.json())["id"] in ids
    assert claim_response(r_old.json())["id"] not in ids
