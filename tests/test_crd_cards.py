"""Each CRD card type, each configuration option, and the coverage answers that are not simply yes."""

from __future__ import annotations

import contextlib

import pytest

from tests.test_crd_conformance import (
    fresh,
    APPOINTMENT, call, card_kind, check_response, collection, coverage_actions, coverage_reps, hook_body, one, order_sign, sandbox,
    searchset, service_request, standard_prefetch, sub,
)

HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"


@contextlib.contextmanager
def crd_config(server, **changes):
    config = server.app.state.precert.services["crd"].config
    old = {k: getattr(config, k) for k in changes}
    for k, v in changes.items():
        setattr(config, k, v)
    try:
        yield config
    finally:
        for k, v in old.items():
            setattr(config, k, v)


def kinds(response: dict) -> list[str]:
    return [card_kind(c) for c in response["cards"]]


def topics(response: dict) -> list[str]:
    return [c["source"]["topic"]["code"] for c in response["cards"]]


def sign(client, *orders, config=None, version=None, patient="pat-001", prefetch="standard", **extra):
    ext = {}
    if config is not None:
        ext["davinci-crd.configuration"] = config
    if version:
        ext["davinci-crd.requestedVersion"] = version
    body = order_sign(*orders, patient=patient, prefetch=prefetch, **({"extension": ext} if ext else {}), **extra)
    r = call(client, body)
    assert r.status_code == 200, r.text
    check_response(r.json(), body, "2.2" if version == "2.2" else "2.0")
    return r.json()


def the_rep(response: dict) -> dict:
    return coverage_reps(coverage_actions(response)[0]["resource"])[0]


# ----------------------------------------------------------------------------- card types
def test_instructions_card_is_text_only(client):
    out = sign(client, service_request("c-surg", "27447", system=HCPCS))
    card = next(c for c in out["cards"] if card_kind(c) == "instructions")
    assert "links" not in card and "suggestions" not in card and "surgical plan" in card["detail"]
    assert card["extension"]["davinci-crd.associated-resource"] == [{"reference": "ServiceRequest/c-surg"}]


def test_instructions_follow_patient_conditions(client):
    out = sign(client, service_request("c-old", "27447", system=HCPCS, patient="pat-007"), patient="pat-007",
               prefetch=standard_prefetch("pat-007", "cov-007"))
    assert any("risk assessment" in c["detail"] for c in out["cards"] if card_kind(c) == "instructions")


def test_external_reference_card_links_to_the_policy(client):
    out = sign(client, service_request("c-mri", "70551"))
    card = next(c for c in out["cards"] if card_kind(c) == "external-reference")
    assert all(l["type"] == "absolute" and l["url"].startswith("https://") for l in card["links"])
    assert "suggestions" not in card


def test_propose_alternate_request_updates_the_draft_order(client):
    order = service_request("c-remicade", "J1745", system=HCPCS)
    out = sign(client, order)
    card = next(c for c in out["cards"] if card_kind(c) == "alternate-request")
    assert card["source"]["topic"]["code"] == "therapy-alternatives-opt"
    action = card["suggestions"][0]["actions"][0]
    assert action["type"] == "update" and action["resource"]["id"] == "c-remicade"
    assert action["resource"]["code"]["coding"][0]["code"] == "Q5103"
    assert action["resource"]["subject"] == order["subject"]


def test_required_alternative_when_the_order_is_not_covered(client):
    out = sign(client, service_request("c-resurf", "S2118", system=HCPCS))
    card = next(c for c in out["cards"] if card_kind(c) == "alternate-request")
    assert card["source"]["topic"]["code"] == "therapy-alternatives-req" and card["indicator"] == "warning"
    rep = the_rep(out)
    assert one(rep, "covered") == "not-covered" and one(rep, "reason")["text"]


def test_no_alternate_requests_on_dispatch(client):
    body = hook_body("order-dispatch", {"patientId": "pat-001", "dispatchedOrders": ["ServiceRequest/d-remicade"], "performer": "Organization/org-clinic"},
                     {**standard_prefetch(), "serviceRequests": searchset(service_request("d-remicade", "J1745", system=HCPCS))})
    out = call(client, body).json()
    assert "alternate-request" not in kinds(out)


def test_request_form_completion_only_where_dtr_is_unavailable(client, server):
    with crd_config(server, dtr="off"):
        out = sign(client, service_request("c-form", "70551"))
        card = next(c for c in out["cards"] if card_kind(c) == "form-completion")
        task = card["suggestions"][0]["actions"][0]["resource"]
        assert task["input"][0]["valueCanonical"] == "http://precert.example.org/fhir/Questionnaire/advanced-imaging"
        assert task["for"] == {"reference": "Patient/pat-001"} and task["basedOn"] == [{"reference": "ServiceRequest/c-form"}]
        out22 = sign(client, service_request("c-form22", "70551"), version="2.2")
        task22 = next(c for c in out22["cards"] if card_kind(c) == "form-completion")["suggestions"][0]["actions"][0]["resource"]
        assert len(task22["input"]) == 1  # 2.2 dropped the afterCompletion input
    with crd_config(server, dtr="on"):
        assert "form-completion" not in kinds(sign(client, service_request("c-noform", "70551")))


def test_no_form_completion_on_secondary_hooks(client, server):
    with crd_config(server, dtr="off"):
        body = hook_body("order-select", {"userId": "Practitioner/prac-001", "patientId": "pat-001",
                                          "draftOrders": collection(service_request("s-form", "70551")), "selections": ["ServiceRequest/s-form"]},
                         standard_prefetch())
        assert "form-completion" not in kinds(call(client, body).json())


def stale_coverage() -> dict:
    """The EHR still thinks pat-010's cancelled coverage is active and open-ended."""
    cov = sandbox("Coverage", "cov-010")
    cov["status"] = "active"
    cov["period"] = {"start": "2024-01-01"}
    return cov


def test_update_coverage_records_card_on_appointment_book(client):
    appt = dict(APPOINTMENT, id="apt-stale", basedOn=[], participant=[{"actor": {"reference": "Patient/pat-010"}, "status": "accepted"}],
                serviceType=[{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}])
    body = hook_body("appointment-book", {"userId": "Practitioner/prac-001", "patientId": "pat-010", "appointments": collection(appt)},
                     {"coverage": searchset(stale_coverage()), "patient": sandbox("Patient", "pat-010")})
    out = call(client, body).json()
    check_response(out, body)
    card = next(c for c in out["cards"] if card_kind(c) == "coverage-update")
    assert card["source"]["topic"]["code"] == "insurance"
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert updated["status"] == "cancelled" and updated["period"]["end"] == "2025-12-31" and updated["id"] == "cov-010"
    rep = coverage_reps(coverage_actions(out)[0]["resource"])[0]
    assert one(rep, "covered") == "not-covered"  # decided on the payer's record, not the stale copy


def test_update_coverage_records_is_a_system_action_on_order_sign(client):
    out = sign(client, service_request("c-stale", "99213", patient="pat-010"), patient="pat-010",
               prefetch={"coverage": searchset(stale_coverage())})
    assert "coverage-update" not in kinds(out)
    updates = [a for a in out["systemActions"] if a["resource"]["resourceType"] == "Coverage"]
    assert updates and updates[0]["resource"]["status"] == "cancelled"


def test_limits_card_when_the_quantity_is_over_the_limit(client):
    out = sign(client, service_request("c-units", "J1745", system=HCPCS, quantityQuantity={"value": 14}))
    card = next(c for c in out["cards"] if c["source"]["topic"]["code"] == "limits")
    assert card["indicator"] == "warning" and "10" in card["summary"]
    detail = sub(the_rep(out), "detail")[0]["extension"]
    assert {"url": "value", "valueQuantity": {"value": 10.0, "unit": "units per request"}} in detail


def test_network_card_for_out_of_network_hmo_orders(client):
    stranger = {"resourceType": "Practitioner", "id": "far-away", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999999"}]}
    out = sign(client, service_request("c-net", "70551", patient="pat-003", requester="Practitioner/far-away"), patient="pat-003",
               prefetch={"coverage": searchset(sandbox("Coverage", "cov-003")), "practitioners": searchset(stranger)})
    assert "network" in topics(out)  # an in-network site is proposed (see below)


# ----------------------------------------------------------------------------- configuration options
@pytest.mark.parametrize("option,order,topic", [
    ("guideline", service_request("o-g", "70551"), "guideline"),
    ("limits", service_request("o-l", "J1745", system=HCPCS, quantityQuantity={"value": 14}), "limits"),
    ("therapy-alternatives-opt", service_request("o-a", "J1745", system=HCPCS), "therapy-alternatives-opt"),
    ("therapy-alternatives-req", service_request("o-r", "S2118", system=HCPCS), "therapy-alternatives-req"),
])
def test_each_card_option_turns_its_cards_off(client, option, order, topic):
    assert topic in topics(sign(client, order))
    assert topic not in topics(sign(client, order, config={option: False}))


def test_network_option(client):
    stranger = {"resourceType": "Practitioner", "id": "far-away", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999999"}]}
    pf = {"coverage": searchset(sandbox("Coverage", "cov-003")), "practitioners": searchset(stranger)}
    order = service_request("o-n", "70551", patient="pat-003", requester="Practitioner/far-away")
    assert "network" not in topics(sign(client, order, patient="pat-003", prefetch=pf, config={"network": False}))


def test_insurance_option(client):
    out = sign(client, service_request("o-i", "99213", patient="pat-010"), patient="pat-010",
               prefetch={"coverage": searchset(stale_coverage())}, config={"insurance": False})
    assert not [a for a in out.get("systemActions", []) if a["resource"]["resourceType"] == "Coverage"]


def test_coverage_info_option_off_means_no_coverage_actions(client):
    out = sign(client, service_request("o-ci", "70551"), config={"coverage-info": False})
    assert not coverage_actions(out)


def test_max_cards_keeps_the_most_important(client):
    order = service_request("o-max", "J1745", system=HCPCS, quantityQuantity={"value": 14})
    full = sign(client, order)
    assert len(full["cards"]) >= 3
    one_card = sign(client, order, config={"max-cards": 1})
    assert len(one_card["cards"]) == 1 and one_card["cards"][0]["source"]["topic"]["code"] == "limits"
    assert sign(client, order, config={"max-cards": 0})["cards"] == []


def test_unknown_and_ill_typed_options_are_ignored(client):
    body = order_sign(service_request("o-unk", "70551"),
                      extension={"davinci-crd.configuration": {"alt-drug": True, "dtr-clin": True, "guideline": "no", "max-cards": "ten"}})
    r = call(client, body)
    assert r.status_code == 200 and "guideline" in topics(r.json())
    audit = fresh(client).get("/admin/crd/calls", params={"hookInstance": body["hookInstance"]}).json()["calls"][0]
    assert set(audit["ignored_options"]) == {"alt-drug", "dtr-clin", "guideline", "max-cards"}


# ----------------------------------------------------------------------------- answers
def test_gold_carded_provider_gets_satisfied_with_a_pa_id(client):
    out = sign(client, service_request("g-1", "70551", requester="Practitioner/prac-002"),
               prefetch={**standard_prefetch(), "practitioners": searchset(sandbox("Practitioner", "prac-002"))})
    rep = the_rep(out)
    assert one(rep, "pa-needed") == "satisfied" and one(rep, "satisfied-pa-id")
    assert one(rep, "reason")["coding"][0]["code"] == "gold-card" and not sub(rep, "doc-needed")


def test_another_payers_coverage_is_indeterminate_in_2_2(client):
    cov = sandbox("Coverage", "cov-001") | {"payor": [{"identifier": {"system": "http://example.org/payer-id", "value": "OTHER"}, "display": "Other Health"}],
                                            "identifier": [{"system": "http://example.org/member", "value": "X1"}]}
    out = sign(client, service_request("p-1", "70551"), prefetch={"coverage": searchset(cov)}, version="2.2")
    rep = the_rep(out)
    assert (one(rep, "covered"), one(rep, "pa-needed")) == ("indeterminate", "indeterminate")
    reason = one(rep, "reason")
    assert reason["coding"][0]["code"] == "no-member-found" and "not with" in reason["text"]
    assert not [c for c in out["cards"] if card_kind(c) != "instructions"]


def test_another_payers_coverage_is_conditional_in_2_0(client):
    cov = sandbox("Coverage", "cov-001") | {"payor": [{"display": "Other Health", "reference": "Organization/other"}],
                                            "identifier": [{"system": "http://example.org/member", "value": "X1"}]}
    rep = the_rep(sign(client, service_request("p-2", "70551"), prefetch={"coverage": searchset(cov)}))
    assert (one(rep, "covered"), one(rep, "pa-needed"), sub(rep, "info-needed")) == ("conditional", "conditional", ["OTH"])
    assert "coding" not in one(rep, "reason")  # 2.0.1 has no code for it: text only


def test_cancelled_coverage_is_not_covered_without_pa_needed(client):
    rep = the_rep(sign(client, service_request("p-3", "99213", patient="pat-010"), patient="pat-010",
                       prefetch={"coverage": searchset(sandbox("Coverage", "cov-010"))}, version="2.2"))
    assert one(rep, "covered") == "not-covered" and one(rep, "pa-needed") is None
    assert one(rep, "reason")["coding"][0]["code"] == "no-active-coverage"


def test_two_coverages_get_distinct_assertion_ids(client):
    other = sandbox("Coverage", "cov-001") | {"id": "cov-second", "payor": [{"display": "Other Health"}],
                                              "identifier": [{"system": "http://example.org/member", "value": "Y"}]}
    out = sign(client, service_request("p-4", "70551"), prefetch={"coverage": searchset(sandbox("Coverage", "cov-001"), other)})
    reps = coverage_reps(coverage_actions(out)[0]["resource"])
    assert len(reps) == 2
    assert one(reps[0], "coverage-assertion-id") != one(reps[1], "coverage-assertion-id")


def test_topic_system_follows_the_version(client):
    order = service_request("v-1", "70551")
    assert {c["source"]["topic"]["system"] for c in sign(client, order)["cards"]} == {"http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"}
    assert {c["source"]["topic"]["system"] for c in sign(client, order, version="2.2")["cards"]} == {
        "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"}


def test_contact_shape_follows_the_version(client):
    order = service_request("v-2", "70551")
    rep20 = the_rep(sign(client, order))
    rep22 = the_rep(sign(client, order, version="2.2"))
    assert one(rep20, "contact") == {"system": "phone", "value": "+1-555-0100"}
    assert one(rep22, "contact")["telecom"] == [{"system": "phone", "value": "+1-555-0100"}]


def test_dtr_availability_follows_the_dtr_catalogue(server):
    crd = server.app.state.precert.services["crd"]
    with crd_config(server, dtr="auto"):
        assert crd.dtr_available("http://precert.example.org/fhir/Questionnaire/advanced-imaging|1.0.0")
        assert not crd.dtr_available("http://other.example.org/Questionnaire/unknown|9")


def test_an_encounter_without_a_service_code_gets_a_conditional_answer(client):
    enc = {"resourceType": "Encounter", "id": "enc-nocode", "status": "planned", "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat-001"}}
    body = hook_body("encounter-start", {"userId": "Practitioner/prac-001", "patientId": "pat-001", "encounterId": "enc-nocode"},
                     {**standard_prefetch(), "encounter": enc})
    out = call(client, body).json()
    check_response(out, body)
    rep = coverage_reps(coverage_actions(out)[0]["resource"])[0]
    assert (one(rep, "covered"), one(rep, "pa-needed"), sub(rep, "info-needed")) == ("conditional", "conditional", ["OTH"])
    assert "no service code" in one(rep, "reason")["text"]


def test_out_of_network_orders_get_an_in_network_site_proposed(client):
    stranger = {"resourceType": "Practitioner", "id": "far-away", "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999999"}]}
    order = service_request("c-site", "70551", patient="pat-003", requester="Practitioner/far-away")
    out = sign(client, order, patient="pat-003", prefetch={"coverage": searchset(sandbox("Coverage", "cov-003")), "practitioners": searchset(stranger)})
    card = next(c for c in out["cards"] if c["source"]["topic"]["code"] == "network")
    assert card_kind(card) == "alternate-request"
    updated = card["suggestions"][0]["actions"][0]["resource"]
    assert updated["id"] == "c-site" and updated["performer"] == [{"reference": "Organization/org-hospital", "display": "Precert Demo General Hospital"}]
    assert updated["code"] == order["code"]
