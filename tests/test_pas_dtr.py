"""PAS decisions from the DTR answers a request carries: the payer's criteria met, not met, or the
answers incomplete, and quantities over the rule's limit."""

from __future__ import annotations

import uuid

from questionnaires.catalog import get_catalog, response_items
from tests.pas_support import CPT, HCPCS, actions, claim_response, pas_request, submit

CATALOG = get_catalog()
PAS_TEMP = "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes"


def questionnaire_response(category: str, answers: dict) -> dict:
    t = CATALOG.templates[category]
    return {"resourceType": "QuestionnaireResponse", "id": uuid.uuid4().hex[:12], "questionnaire": t.canonical,
            "status": "completed", "item": response_items(t, answers, CATALOG)}


def with_answers(bundle: dict, qr: dict, inside_bundle: bool = False) -> dict:
    """Attach DTR answers through Claim.supportingInfo, directly or inside a Bundle (2.2.1)."""
    base = bundle["entry"][1]["fullUrl"].rsplit("/", 2)[0]
    if inside_bundle:
        holder = {"resourceType": "Bundle", "id": uuid.uuid4().hex[:12], "type": "collection",
                  "entry": [{"fullUrl": f"{base}/QuestionnaireResponse/{qr['id']}", "resource": qr}]}
        full_url, resource = f"{base}/Bundle/{holder['id']}", holder
    else:
        full_url, resource = f"{base}/QuestionnaireResponse/{qr['id']}", qr
    bundle["entry"].append({"fullUrl": full_url, "resource": resource})
    claim = bundle["entry"][0]["resource"]
    seq = max([s["sequence"] for s in claim.get("supportingInfo", [])] + [0]) + 1
    claim.setdefault("supportingInfo", []).append({
        # 2.2.1 describes each attached document (documentInformation, X12 PWK: report type, how sent).
        "extension": [{"url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-documentInformation", "extension": [
            {"url": "reportTypeCode", "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/755", "code": "OZ"}]}},
            {"url": "transmissionMethod", "valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/756", "code": "EL"}]}}]}],
        "sequence": seq,
        "category": {"coding": [{"system": PAS_TEMP, "code": "additionalInformation"}]},
        "valueReference": {"reference": full_url},
    })
    return bundle


def examples(category: str) -> dict:
    return CATALOG.templates[category].examples


def test_imaging_with_criteria_met_is_certified_at_once(client):
    qr = questionnaire_response("advanced-imaging", examples("advanced-imaging")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "70551")), qr)).json()
    assert actions(body) == {1: "A1"}


def test_answers_inside_a_bundle_are_found(client):
    qr = questionnaire_response("advanced-imaging", examples("advanced-imaging")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "70551")), qr, inside_bundle=True)).json()
    assert actions(body) == {1: "A1"}


def test_imaging_with_criteria_not_met_pends_for_a_physician_with_the_unmet_criteria(client):
    qr = questionnaire_response("advanced-imaging", examples("advanced-imaging")["not_met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "70551")), qr)).json()
    assert actions(body) == {1: "A4"}  # automatic decisions never deny on clinical grounds
    note = claim_response(body)["processNote"][0]["text"]
    assert note.startswith("Item 1 (70551): Pended for review by a physician: the answers do not meet the criteria") and len(note) > 90


def test_incomplete_answers_pend(client):
    answers = dict(examples("advanced-imaging")["met"])
    t = CATALOG.templates["advanced-imaging"]
    answers.pop(next(k for k in answers if t.items[k].get("required") and not t.items[k].get("enableWhen")))
    qr = questionnaire_response("advanced-imaging", answers)
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "70551")), qr)).json()
    assert actions(body) == {1: "A4"}
    assert "incomplete" in claim_response(body)["processNote"][0]["text"]


def test_answers_to_another_questionnaire_do_not_count(client):
    qr = questionnaire_response("dme-home-oxygen", examples("dme-home-oxygen")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "70551")), qr)).json()
    assert actions(body) == {1: "A4"}


def test_quantity_over_the_limit_is_modified_with_what_is_authorized(client):
    qr = questionnaire_response("specialty-drugs", examples("specialty-drugs")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(HCPCS, "J1745"), quantity=20), qr)).json()
    assert actions(body) == {1: "A6"}
    cr = claim_response(body)
    assert cr["addItem"][0]["itemSequence"] == [1]
    assert cr["addItem"][0]["quantity"]["value"] == 10
    add_action = cr["addItem"][0]["adjudication"][0]["extension"][0]["extension"][-1]["valueCodeableConcept"]["coding"][0]["code"]
    assert add_action == "A1"
    assert "20 requested" in cr["processNote"][0]["text"]


def test_quantity_within_the_limit_is_certified(client):
    qr = questionnaire_response("specialty-drugs", examples("specialty-drugs")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(HCPCS, "J1745"), quantity=8), qr)).json()
    assert actions(body) == {1: "A1"}


def test_reviewer_sees_the_assessment_of_a_pended_case(client):
    qr = questionnaire_response("inpatient-surgery", examples("inpatient-surgery")["met"])
    body = submit(client, with_answers(pas_request("2.2.1", code=(CPT, "27447")), qr)).json()
    assert actions(body) == {1: "A4"}
    number = next(e for e in claim_response(body)["item"][0]["extension"] if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]
    case = client.get(f"/review/api/cases/{number}").json()
    assessment = case["decisions"][0]["assessment"]
    assert assessment["met"] is True and assessment["category"] == "inpatient-surgery"


def test_adaptive_form_answers_count_for_the_form_they_grew_from(client):
    t = CATALOG.templates["behavioral-iop"]
    qr = questionnaire_response("behavioral-iop", examples("behavioral-iop")["met"])
    qr["contained"] = [{"resourceType": "Questionnaire", "id": "adaptive", "derivedFrom": [t.adaptive_url + "|1.0.0"], "status": "active"}]
    qr["questionnaire"] = "#adaptive"
    body = submit(client, with_answers(pas_request("2.2.1", code=(HCPCS, "S9480"), quantity=12), qr)).json()
    assert actions(body) == {1: "A1"}
