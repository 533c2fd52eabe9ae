"""The Request Form Completion Task meets CRD profile-taskquestionnaire and reads as Inferno's CRD kit reads it.

The kit recognises a form-completion action by a ``create`` of a Task whose code is
``complete-questionnaire`` and whose ``input`` with ``type.text`` "questionnaire" holds a
``valueCanonical`` it can parse as an http(s) URI: a canonical with ``|version`` is no URI.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.test_crd_cards import crd_config, sign
from tests.test_crd_conformance import card_kind, service_request
from tests.test_validator_responses import conformance_errors

TASK_PROFILE = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/profile-taskquestionnaire"
URI_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


def form_task(out: dict) -> dict:
    card = next(c for c in out["cards"] if card_kind(c) == "form-completion")
    (action,) = card["suggestions"][0]["actions"]
    assert action["type"] == "create"
    return action["resource"]


@pytest.fixture
def tasks(client, server):
    with crd_config(server, dtr="off"):
        yield {"2.0": form_task(sign(client, service_request("t-form", "70551"))),
               "2.2": form_task(sign(client, service_request("t-form22", "70551"), version="2.2"))}


def test_form_completion_task_meets_the_crd_task_questionnaire_profile(tasks):
    # CRD 2.2 dropped the afterCompletion input 2.0.1 requires; only the 2.0.1 package ships here.
    assert conformance_errors(tasks["2.0"], TASK_PROFILE, "hl7.fhir.us.davinci-crd-2.0.1") == []


@pytest.mark.parametrize("version", ["2.0", "2.2"])
def test_form_completion_task_is_requested_by_the_payer_organization(tasks, version):
    requester = tasks[version]["requester"]
    assert requester["display"] == "Precert Demo Health Plan"
    assert requester["identifier"] == {"system": "http://precert.example.org/sid/payer-id", "value": "PRECERT01"}
    assert requester.get("reference", "Organization/").startswith("Organization/")


@pytest.mark.parametrize("version", ["2.0", "2.2"])
def test_form_completion_questionnaire_canonical_parses_as_an_http_uri(tasks, version):
    task = tasks[version]
    assert any(c["code"] == "complete-questionnaire" for c in task["code"]["coding"])
    (q,) = [i for i in task["input"] if i["type"].get("text") == "questionnaire"]
    url = q["valueCanonical"]
    assert set(url) <= URI_CHARS  # no "|": Ruby's URI.parse (the kit's parser) rejects it
    parts = urlsplit(url)
    assert parts.scheme in ("http", "https") and parts.netloc
    assert url == "http://precert.example.org/fhir/Questionnaire/advanced-imaging"


def test_form_completion_questionnaire_canonical_resolves_on_the_fhir_api(client, tasks):
    url = next(i for i in tasks["2.0"]["input"] if i["type"].get("text") == "questionnaire")["valueCanonical"]
    r = client.get("/fhir/Questionnaire", params={"url": url})
    assert r.status_code == 200
    assert any(e["resource"]["url"] == url for e in r.json().get("entry", []))
