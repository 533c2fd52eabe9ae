"""Claim/$submit: checking requests, deciding them, and answering in the PAS response shapes."""

from __future__ import annotations

import concurrent.futures

import httpx
import orjson
import pytest

from tests.pas_support import CPT, FHIR, actions, claim_response, entry, pas_request, submit
from tests.support import example, package_examples

REQUEST_EXAMPLES = [
    (v, name)
    for v in ("2.0.1", "2.2.1")
    for name in sorted(package_examples(f"hl7.fhir.us.davinci-pas-{v}"))
    if name.startswith("Bundle-") and name.endswith(".json")
    and package_examples(f"hl7.fhir.us.davinci-pas-{v}")[name].get("entry", [{}])[0].get("resource", {}).get("resourceType") == "Claim"
    and package_examples(f"hl7.fhir.us.davinci-pas-{v}")[name]["entry"][0]["resource"].get("use") == "preauthorization"
    and "Inquiry" not in name
]


def test_there_are_request_examples_in_both_versions():
    assert {v for v, _ in REQUEST_EXAMPLES} == {"2.0.1", "2.2.1"}
    assert len(REQUEST_EXAMPLES) >= 8


@pytest.mark.parametrize("version,name", REQUEST_EXAMPLES)
def test_each_official_request_example_is_accepted_and_answered(client, version, name):
    bundle = pas_request(version, name)
    r = submit(client, bundle)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "collection"
    assert body["identifier"]["value"] and body["timestamp"]
    cr = claim_response(body)
    assert cr["use"] == "preauthorization" and cr["status"] == "active"
    assert cr["identifier"] == bundle["entry"][0]["resource"]["identifier"]
    submitted = sorted(i["sequence"] for i in bundle["entry"][0]["resource"]["item"])
    assert sorted(actions(body)) == submitted, "every submitted item is answered, by its sequence"


def references(value, out):
    if isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            out.append(value["reference"])
        for v in value.values():
            references(v, out)
    elif isinstance(value, list):
        for v in value:
            references(v, out)
    return out


def test_every_reference_in_the_response_resolves_inside_it(client):
    body = submit(client, pas_request("2.2.1")).json()
    full_urls = [e["fullUrl"] for e in body["entry"]]
    assert len(full_urls) == len(set(full_urls)), "each resource appears once"
    last_base = full_urls[-1].rsplit("/", 2)[0]
    cr = dict(claim_response(body))
    cr.pop("request")
    for e in [{"resource": cr}] + body["entry"][1:]:
        for ref in references(e["resource"], []):
            absolute = ref if "://" in ref or ref.startswith("urn:") else f"{last_base}/{ref}"
            assert absolute in full_urls, f"{ref} does not resolve in the response Bundle"


def shape(cr: dict) -> dict:
    """The parts of a ClaimResponse a PAS client reads, for comparing with the IG's examples."""
    return {
        "status": cr["status"],
        "use": cr["use"],
        "outcome": cr["outcome"],
        "profile": cr["meta"]["profile"][0].split("|")[0],
        "items": sorted((i["itemSequence"], i["adjudication"][0]["category"]["coding"][0]["code"]) for i in cr.get("item", [])),
    }


def test_approval_matches_the_igs_approved_response_example(client):
    expected = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ReferralAuthorizationResponseBundleExample.json")
    body = submit(client, pas_request("2.2.1")).json()
    assert shape(claim_response(body)) == shape(claim_response(expected))
    assert actions(body) == actions(expected) == {1: "A1"}
    cr = claim_response(body)
    assert cr["preAuthRef"] and cr["preAuthPeriod"]["start"] <= cr["preAuthPeriod"]["end"]
    item_exts = {e["url"].rsplit("/", 1)[1] for e in cr["item"][0]["extension"]}
    assert {"extension-itemPreAuthIssueDate", "extension-itemPreAuthPeriod"} <= item_exts


def test_pend_matches_the_igs_pended_response_example(client):
    expected = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ReferralPendingAuthorizationResponseBundleExample.json")
    body = submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json")).json()
    assert actions(body) == actions(expected) == {1: "A4"}
    assert shape(claim_response(body)) == shape(claim_response(expected))
    exts = {e["url"].rsplit("/", 1)[1] for e in claim_response(body)["item"][0]["extension"]}
    assert "extension-administrationReferenceNumber" in exts  # the pend reference, as in the example


def test_pend_in_2_0_1_is_queued(client):
    body = submit(client, pas_request("2.0.1", "Bundle-SurgicalRequestBundleExample.json")).json()
    assert actions(body) == {1: "A4"}
    assert claim_response(body)["outcome"] in ("queued", "complete")


def test_denial_matches_the_igs_rejection_example_and_gives_a_specific_reason(client):
    expected = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-RejectionResponseBundleExample.json")
    body = submit(client, pas_request("2.2.1", code=(CPT, "15830"))).json()
    assert actions(body) == actions(expected) == {1: "A3"}
    cr = claim_response(body)
    note_numbers = cr["item"][0]["noteNumber"]
    notes = {n["number"]: n["text"] for n in cr["processNote"]}
    assert "15830" in notes[note_numbers[0]] and "excluded" in notes[note_numbers[0]].lower()


def test_service_needing_no_authorization_is_approved_never_pended(client):
    body = submit(client, pas_request("2.2.1", code=(CPT, "99213"))).json()
    assert actions(body) == {1: "A1"}
    assert "no prior authorization" in claim_response(body)["processNote"][0]["text"].lower()


def test_missing_documentation_pends_for_review(client):
    body = submit(client, pas_request("2.2.1", code=(CPT, "70551"))).json()
    assert actions(body) == {1: "A4"}
    assert "documentation" in claim_response(body)["processNote"][0]["text"].lower()


def test_gold_carded_provider_is_approved_without_documentation(client):
    body = submit(client, pas_request("2.2.1", code=(CPT, "70551"), provider_npi="1567890128")).json()
    assert actions(body) == {1: "A1"}
    assert "gold" in claim_response(body)["processNote"][0]["text"].lower()


def test_sandbox_member_request_is_decided(client):
    body = submit(client, pas_request("2.2.1", member="PCM000003")).json()
    assert actions(body) == {1: "A1"}


@pytest.mark.parametrize(
    "member,code,text",
    [("NOSUCHMEMBER", "75", "not found"), ("PCM000010", "78", "cancelled")],
)
def test_business_errors_are_a_claim_response_with_error_codes(client, member, code, text):
    expected = example("hl7.fhir.us.davinci-pas-2.2.1", "Bundle-ErrorResponseBundleExample.json")
    r = submit(client, pas_request("2.2.1", member=member))
    assert r.status_code == 200
    cr = claim_response(r.json())
    assert cr["outcome"] == claim_response(expected)["outcome"] == "error"
    assert cr["error"][0]["code"]["coding"][0] == {**cr["error"][0]["code"]["coding"][0], "system": "https://codesystem.x12.org/005010/901", "code": code}
    assert text in cr["processNote"][0]["text"].lower()
    assert "item" not in cr


def test_request_for_another_payer_is_refused_as_a_business_error(client):
    bundle = pas_request("2.2.1")
    insurer = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "InsurerExample")
    insurer["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1111111112"}]
    insurer["name"] = "Some Other Health Plan"
    coverage = entry(bundle, "Coverage")
    coverage["payor"] = [{"reference": "Organization/InsurerExample"}]
    cr = claim_response(submit(client, bundle).json())
    assert cr["outcome"] == "error" and cr["error"][0]["code"]["coding"][0]["code"] == "T4"


def test_urgent_request_gets_the_72_hour_clock(client):
    body = submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json", priority="stat")).json()
    case_number = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    case = client.get(f"/review/api/cases/{case_number}").json()
    assert case["urgency"] == "expedited"
    from datetime import datetime
    received, due = datetime.fromisoformat(case["received"].replace("Z", "+00:00")), datetime.fromisoformat(case["due"].replace("Z", "+00:00"))
    assert (due - received).total_seconds() == 72 * 3600


def test_standard_request_gets_seven_days(client):
    body = submit(client, pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json")).json()
    number = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    case = client.get(f"/review/api/cases/{number}").json()
    from datetime import datetime
    received, due = datetime.fromisoformat(case["received"].replace("Z", "+00:00")), datetime.fromisoformat(case["due"].replace("Z", "+00:00"))
    assert case["urgency"] == "standard" and (due - received).days == 7


# ---------------------------------------------------------------------- durability and idempotency
def test_decision_is_stored_as_claim_and_claim_response(client):
    bundle = pas_request("2.2.1")
    body = submit(client, bundle).json()
    cr_id = claim_response(body)["id"]
    stored = client.get(f"/fhir/ClaimResponse/{cr_id}")
    assert stored.status_code == 200
    claim_ref = stored.json()["request"]["reference"]
    claim = client.get(f"/fhir/{claim_ref}").json()
    assert claim["identifier"] == bundle["entry"][0]["resource"]["identifier"]


def test_retried_submission_returns_the_same_decision_without_a_second_case(client):
    bundle = pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json")
    first = submit(client, bundle)
    second = submit(client, bundle)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    cr_id = claim_response(first.json())["id"]
    found = client.get("/fhir/ClaimResponse", params={"_id": cr_id}).json()
    assert found["total"] == 1


def test_concurrent_duplicates_create_one_case(server, client):
    bundle = pas_request("2.2.1", "Bundle-SurgicalRequestBundleExample.json")
    ident = bundle["entry"][0]["resource"]["identifier"][0]
    ident["value"] = "CONCURRENT-" + bundle["identifier"]["value"]
    payload = orjson.dumps(bundle)

    def go(_):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return c.post("/fhir/Claim/$submit", content=payload, headers=FHIR)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(go, range(8)))
    assert all(r.status_code == 200 for r in results), [r.text[:200] for r in results]
    assert len({r.content for r in results}) == 1
    found = client.get("/fhir/Claim", params={"identifier": f"{ident['system']}|{ident['value']}"}).json()
    assert found["total"] == 1


def test_a_different_bundle_reusing_an_identifier_is_decided_on_its_own(client):
    """Test tools resend their fixed examples with one identifier and other codes; each is its own
    request, never answered with another's decision."""
    bundle = pas_request("2.2.1")
    first_response = submit(client, bundle)
    first = first_response.json()
    changed = orjson.loads(orjson.dumps(bundle))
    changed["entry"][0]["resource"]["item"][0]["productOrService"] = {"coding": [{"system": CPT, "code": "15830"}]}
    second = submit(client, changed)
    assert second.status_code == 200
    assert actions(first) == {1: "A1"} and actions(second.json()) == {1: "A3"}
    assert claim_response(second.json())["id"] != claim_response(first)["id"]
    assert submit(client, bundle).content == first_response.content  # the first is still a retry of itself


def test_parameters_wrapped_request_is_accepted(client):
    bundle = pas_request("2.2.1")
    r = client.post("/fhir/Claim/$submit", content=orjson.dumps({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": bundle}]}), headers=FHIR)
    assert r.status_code == 200 and actions(r.json()) == {1: "A1"}


def test_coverage_change_takes_effect_at_once(client):
    """Eligibility is cached for speed, but a change to a Coverage is seen by the next request."""
    assert actions(submit(client, pas_request("2.2.1", member="PCM000004")).json()) == {1: "A1"}
    coverage = client.get("/fhir/Coverage/cov-004").json()
    try:
        client.put("/fhir/Coverage/cov-004", json=dict(coverage, status="cancelled"), headers=FHIR)
        cr = claim_response(submit(client, pas_request("2.2.1", member="PCM000004")).json())
        assert cr["outcome"] == "error" and cr["error"][0]["code"]["coding"][0]["code"] == "78"
    finally:
        current = client.get("/fhir/Coverage/cov-004").json()
        client.put("/fhir/Coverage/cov-004", json=dict(current, status="active"), headers=FHIR)
    assert actions(submit(client, pas_request("2.2.1", member="PCM000004")).json()) == {1: "A1"}


def test_capability_statement_declares_pas(client):
    cs = client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/us/davinci-pas/CapabilityStatement/IntermediaryCapabilities" in cs["instantiates"]
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    ops = {o["name"]: o["definition"] for o in resources["Claim"]["operation"]}
    assert ops["submit"] == "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-submit"
    assert ops["inquire"] == "http://hl7.org/fhir/us/davinci-pas/OperationDefinition/Claim-inquiry"
    topics = [e["valueCanonical"] for e in resources["Subscription"].get("extension", [])]
    assert "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic" in topics
    assert any(o["name"] == "status" for o in resources["Subscription"]["operation"])
