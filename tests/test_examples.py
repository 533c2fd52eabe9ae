"""Every request in examples/ does what examples/README.md says it does: each one-line ``curl`` is
run as written against a real Precert sandbox (its own database, loaded at start like a fresh
install), in the order of examples/index.json, and its outcome checked exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from server.app import create_app
from server.examples import DEFAULT_URL, EXAMPLES, catalog, find
from server.settings import Settings
from tests.pas_support import actions, claim_response
from tests.support import ROOT, ThreadedServer

INFO = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"


@pytest.fixture(scope="module")
def sandbox(mongodb_uri):
    srv = ThreadedServer(create_app(Settings(mongodb_uri=mongodb_uri, db_name=f"precert_examples_{uuid.uuid4().hex[:8]}",
                                             load_sandbox=True))).start()
    yield srv
    srv.stop()


def run_curl(line: str) -> tuple[int, dict]:
    """Run the documented line through the shell, from the repository root, adding only -w for the status."""
    out = subprocess.run(line + " -w '\\n%{http_code}'", shell=True, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(body)


def coverage_information(response: dict) -> dict:
    [action] = response["systemActions"]
    [ext] = [e for e in action["resource"]["extension"] if e["url"] == INFO]
    values: dict = {}
    for e in ext["extension"]:
        values.setdefault(e["url"], []).append(next(v for k, v in e.items() if k.startswith("value")))
    return values


def check_crd(status: int, body: dict, patient: str) -> None:
    assert status == 200, body
    info = coverage_information(body)
    assert info["covered"] == ["covered"] and info["pa-needed"] == ["auth-needed"]
    assert any(q.split("|")[0].endswith("/advanced-imaging") for q in info["questionnaire"])
    assert body["systemActions"][0]["resource"]["subject"]["reference"] == f"Patient/{patient}"


def returned(body: dict, name: str) -> list[dict]:
    assert body["resourceType"] == "Parameters"
    return [p["resource"] for p in body["parameter"] if p["name"] == name]


def check(name: str, status: int, body: dict) -> None:
    """The outcome examples/index.json (and so examples/README.md) promises for ``name``."""
    if name == "crd-order-sign":
        check_crd(status, body, "pat-001")
    elif name == "crd-order-sign-no-prefetch":
        check_crd(status, body, "pat-003")
    elif name == "dtr-questionnaire-package":
        assert status == 200, body
        [bundle] = returned(body, "PackageBundle")
        form = bundle["entry"][0]["resource"]
        assert form["resourceType"] == "Questionnaire" and form["url"].endswith("/advanced-imaging")
        assert {"Library", "ValueSet"} <= {e["resource"]["resourceType"] for e in bundle["entry"]}
    elif name == "dtr-next-question":
        assert status == 200, body
        sent = json.loads((EXAMPLES / f"{name}.json").read_text())
        assert body["resourceType"] == "QuestionnaireResponse" and body["status"] == "in-progress"
        assert len(body["contained"][0]["item"]) > len(sent["contained"][0]["item"])
    elif name.startswith("pas-a"):
        assert status == 200, body
        expected = {"pas-a1-approved": "A1", "pas-a3-denied": "A3", "pas-a4-pended": "A4", "pas-a6-modified": "A6"}[name]
        assert actions(body) == {1: expected}
        assert claim_response(body)["outcome"] == "complete"
        if expected == "A6":
            assert claim_response(body)["addItem"][0]["quantity"]["value"] == 10
    elif name == "pas-update":
        assert status == 200, body
        assert actions(body) == {1: "A1"}
    elif name == "pas-cancel":
        assert status == 200, body
        assert actions(body) == {1: "C"} and claim_response(body)["disposition"] == "Cancelled"
    elif name == "pas-inquiry":
        assert status == 200, body
        [bundle] = returned(body, "return")
        assert claim_response(bundle)["outcome"] == "complete" and actions(bundle) == {1: "A1"}
    elif name == "subscription-create":
        assert status == 201, body
        assert body["resourceType"] == "Subscription" and body["status"] == "requested"
    else:
        raise AssertionError(f"examples/index.json lists '{name}', which this test does not check")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_every_example_curl_line_gives_the_documented_outcome(sandbox):
    for example in catalog():
        status, body = run_curl(example.curl(sandbox.url))
        check(example.name, status, body)


def test_examples_run_again_give_the_same_outcomes(sandbox):
    """A retried PAS request is answered with its decision; nothing in an example goes stale."""
    from server.examples import send

    for example in catalog():
        if example.name != "subscription-create":
            r = send(example, sandbox.url)
            check(example.name, r.status_code, r.json())


def test_precert_example_sends_one_and_prints_the_response(sandbox, capsys):
    from server.cli import main

    assert main(["example", "pas-a3-denied", "--url", sandbox.url]) == 0
    out = capsys.readouterr().out
    first, _, rest = out.partition("\n")
    assert first.startswith("200 OK")
    assert actions(json.loads(rest)) == {1: "A3"}


def test_precert_example_without_a_name_lists_them(capsys):
    from server.cli import main

    assert main(["example"]) == 0
    out = capsys.readouterr().out
    assert all(e.name in out for e in catalog())


def test_precert_example_without_a_server_says_it_cannot_reach_it(capsys):
    from server.cli import main
    from tests.support import free_port

    assert main(["example", "pas-a1-approved", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("precert: cannot reach Precert at") and "\n" not in err


def test_an_unknown_example_is_named(capsys):
    from server.cli import main

    assert main(["example", "no-such-example"]) == 1
    assert "no example 'no-such-example'" in capsys.readouterr().err


def test_the_examples_index_documents_each_curl_line_and_outcome():
    index = (EXAMPLES / "README.md").read_text()
    for example in catalog():
        assert example.curl(DEFAULT_URL) in index, example.name
        assert example.outcome in index, example.name
        assert example.file.is_file()
        assert example.after is None or find(example.after) is not None
    assert "examples/README.md" in (ROOT / "README.md").read_text()
