"""``precert walkthrough``: one prior authorization driven from order to decision against a running
Precert sandbox, printing each exchange. It is what an EHR integration does, in order:

1. CRD: the clinician signs an MRI order; ``order-sign`` answers that prior authorization is needed
   and names the DTR form.
2. DTR: ``Questionnaire/$questionnaire-package`` returns the form and its CQL for that order.
3. PAS: the EHR subscribes to decisions for its organization, then submits the request without the
   form, so it is pended for a clinician.
4. A payer reviewer signs in and approves it.
5. The EHR's endpoint (a small listener this command runs on loopback) receives the decision, and
   ``Claim/$inquire`` returns the same answer.

When the server enforces authentication (``PRECERT_REQUIRE_AUTH=true``), every call is signed as an
EHR would sign it, with the sandbox's published keys: a SMART Backend Services access token for the
``sandbox-clinic`` client (``docs/sandbox-keys/sandbox-clinic-es384.pem``) on the FHIR calls, and an
EHR JWT from the demo EHR key (``cds_hooks/demo_ehr_private_key.pem``) on the CDS Hooks call.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import jwt

from cds_hooks.jwt_auth import demo_token
from server.pas.constants import TOPIC
from server.subscriptions.model import EXT_CONTENT, EXT_FILTER

FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
CPT = "http://www.ama-assn.org/go/cpt"
CLINIC_NPI = "1234567893"
SANDBOX_CLIENT = "sandbox-clinic"
SANDBOX_CLIENT_KEY = Path(__file__).resolve().parents[1] / "docs" / "sandbox-keys" / "sandbox-clinic-es384.pem"
SANDBOX_CLIENT_KID = "sandbox-clinic-es384"
SCOPES = ("system/Patient.rs system/Coverage.rs system/Organization.rs system/Questionnaire.rs system/Claim.cr "
          "system/ClaimResponse.rs system/Subscription.cruds")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class _Listener(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            type(self).received.append(json.loads(body))
        except ValueError:
            pass
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _mri_order(order_id: str) -> dict:
    return {
        "resourceType": "ServiceRequest", "id": order_id, "status": "draft", "intent": "order",
        "code": {"coding": [{"system": CPT, "code": "70551", "display": "MRI brain without contrast"}]},
        "subject": {"reference": "Patient/pat-001"},
        "requester": {"reference": "PractitionerRole/role-001"},
        "authoredOn": time.strftime("%Y-%m-%d"),
        "insurance": [{"reference": "Coverage/cov-001"}],
    }


def _pas_bundle(client: httpx.Client, order: dict) -> dict:
    def read(ref: str) -> dict:
        r = client.get(f"/fhir/{ref}")
        r.raise_for_status()
        return r.json()

    base = str(client.base_url).rstrip("/") + "/fhir"
    patient, coverage = read("Patient/pat-001"), read("Coverage/cov-001")
    clinic, payer = read("Organization/org-clinic"), read("Organization/precert-demo-payer")
    claim = {
        "resourceType": "Claim", "id": f"walkthrough-{uuid.uuid4().hex[:8]}", "status": "active",
        "identifier": [{"system": "urn:precert:walkthrough", "value": uuid.uuid4().hex}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "preauthorization", "patient": {"reference": "Patient/pat-001"}, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "insurer": {"reference": "Organization/precert-demo-payer"}, "provider": {"reference": "Organization/org-clinic"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-001"}}],
        "item": [{"sequence": 1, "category": {"coding": [{"system": "https://codesystem.x12.org/005010/1365", "code": "62", "display": "MRI/CAT Scan"}]},
                  "productOrService": order["code"], "quantity": {"value": 1, "unit": "procedure"},
                  "servicedDate": time.strftime("%Y-%m-%d")}],
    }
    entries = [claim, patient, coverage, clinic, payer]
    return {
        "resourceType": "Bundle", "type": "collection", "timestamp": claim["created"],
        "identifier": {"system": "urn:precert:walkthrough:bundle", "value": uuid.uuid4().hex},
        "entry": [{"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r} for r in entries],
    }


def _review_action(response_bundle: dict) -> str:
    cr = response_bundle["entry"][0]["resource"]
    for ext in cr["item"][0]["adjudication"][0]["extension"]:
        for sub in ext.get("extension", []):
            if sub["url"].endswith("extension-reviewActionCode"):
                return sub["valueCodeableConcept"]["coding"][0]["code"]
    return "?"


def _exchange_printer(out):
    """httpx event hooks that print each request and response (``precert walkthrough --verbose``)."""
    def show(body: bytes, limit: int = 4000) -> str:
        text = body.decode("utf-8", "replace")
        return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"

    def on_request(request: httpx.Request) -> None:
        out(f"   > {request.method} {request.url}")
        if request.content:
            out(f"   > {show(request.content)}")

    def on_response(response: httpx.Response) -> None:
        response.read()
        out(f"   < {response.status_code} {response.headers.get('content-type', '')}")
        if response.content:
            out(f"   < {show(response.content)}")

    return {"request": [on_request], "response": [on_response]}


def authentication_enforced(client: httpx.Client) -> bool:
    """Does the server refuse an unsigned FHIR read (``PRECERT_REQUIRE_AUTH=true``, or production)?"""
    return client.get("/fhir/Patient/pat-001").status_code == 401


def backend_token(client: httpx.Client, scope: str = SCOPES) -> str:
    """A SMART Backend Services access token for the sandbox clinic, signed with its published key."""
    if not SANDBOX_CLIENT_KEY.is_file():
        raise RuntimeError(f"the sandbox client key {SANDBOX_CLIENT_KEY} is not here (run from a clone of the repository)")
    token_url = client.get("/.well-known/smart-configuration").json()["token_endpoint"]
    now = int(time.time())
    assertion = jwt.encode({"iss": SANDBOX_CLIENT, "sub": SANDBOX_CLIENT, "aud": token_url, "exp": now + 240,
                            "jti": secrets.token_hex(16)}, SANDBOX_CLIENT_KEY.read_text(), algorithm="ES384",
                           headers={"kid": SANDBOX_CLIENT_KID, "typ": "JWT"})
    r = client.post(token_url, data={"grant_type": "client_credentials", "scope": scope,
                                     "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
    r.raise_for_status()
    return r.json()["access_token"]


def run(base_url: str, reviewer: str = "reviewer", password: str = "reviewer-sandbox", out=print, timeout: float = 30,
        verbose: bool = False, sign: bool | None = None) -> dict:
    """Drive the walkthrough; returns what each step produced (for tests and scripts).

    ``sign``: sign the calls with the sandbox keys; None (the default) signs when the server
    refuses unsigned calls."""
    result: dict = {}
    listener = HTTPServer(("127.0.0.1", 0), type("Listener", (_Listener,), {"received": []}))
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{listener.server_address[1]}/pas-notifications"
    try:
        hooks = _exchange_printer(out) if verbose else {}
        with httpx.Client(base_url=base_url, timeout=30, event_hooks=hooks) as client:
            if sign is None:
                sign = authentication_enforced(client)
            crd_headers = {}
            if sign:
                out(f"0. authentication is enforced: signing as {SANDBOX_CLIENT} (SMART Backend Services) and as the demo EHR (CDS Hooks)")
                client.headers["Authorization"] = f"Bearer {backend_token(client)}"
                crd_headers = {"Authorization": f"Bearer {demo_token(str(client.base_url).rstrip('/') + '/cds-services/order-sign-crd')}"}
            result["signed"] = bool(sign)
            order = _mri_order(f"mri-{uuid.uuid4().hex[:8]}")
            out("1. CRD order-sign: the clinician signs an MRI order for Ana Rivera (pat-001)")
            hook = {
                "hook": "order-sign", "hookInstance": str(uuid.uuid4()),
                "context": {"userId": "PractitionerRole/role-001", "patientId": "pat-001",
                            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]}},
                "prefetch": {"patient": client.get("/fhir/Patient/pat-001").json(),
                             "coverage": {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": client.get("/fhir/Coverage/cov-001").json()}]}},
            }
            crd = client.post("/cds-services/order-sign-crd", json=hook, headers=crd_headers)
            crd.raise_for_status()
            crd_body = crd.json()
            actions = crd_body.get("systemActions", [])
            info = {}
            if actions:
                ext = next(e for e in actions[0]["resource"]["extension"] if e["url"].endswith("ext-coverage-information"))
                info = {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in ext["extension"]}
            result["crd"] = info
            out(f"   coverage-information: covered={info.get('covered')} pa-needed={info.get('pa-needed')} "
                f"questionnaire={info.get('questionnaire')}")
            for card in crd_body.get("cards", [])[:3]:
                out(f"   card: {card['summary']}")

            out("2. DTR $questionnaire-package for that order")
            params = {"resourceType": "Parameters", "parameter": [
                {"name": "coverage", "resource": client.get("/fhir/Coverage/cov-001").json()},
                {"name": "order", "resource": order}]}
            pkg = client.post("/fhir/Questionnaire/$questionnaire-package", json=params, headers=FHIR)
            pkg.raise_for_status()
            bundles = [p["resource"] for p in pkg.json().get("parameter", []) if p.get("name", "").lower() in ("packagebundle", "return")]
            titles = [b["entry"][0]["resource"].get("title") for b in bundles]
            result["dtr"] = titles
            out(f"   forms: {', '.join(t or '?' for t in titles)} ({sum(len(b['entry']) for b in bundles)} resources)")

            out(f"3. PAS: subscribe to decisions for NPI {CLINIC_NPI}, then submit without the form")
            sub = {
                "resourceType": "Subscription", "status": "requested", "reason": "walkthrough", "criteria": TOPIC,
                "_criteria": {"extension": [{"url": EXT_FILTER, "valueString": f"org-identifier={CLINIC_NPI}"}]},
                "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": EXT_CONTENT, "valueCode": "full-resource"}]}},
            }
            created = client.post("/fhir/Subscription", json=sub, headers=FHIR)
            created.raise_for_status()
            sub_id = created.json()["id"]
            submitted = client.post("/fhir/Claim/$submit", json=_pas_bundle(client, order), headers=FHIR)
            submitted.raise_for_status()
            response = submitted.json()
            result["submitted"] = _review_action(response)
            cr = response["entry"][0]["resource"]
            out(f"   decision at once: {result['submitted']} ({cr.get('disposition')}); note: {cr.get('processNote', [{}])[0].get('text', '')}")
            number = next(e for e in cr["item"][0].get("extension", []) if e["url"].endswith("administrationReferenceNumber"))["valueString"].rsplit("-", 1)[0]

            out(f"4. a reviewer signs in and approves case {number}")
            login = client.post("/staff/login", json={"username": reviewer, "password": password})
            login.raise_for_status()
            staff = {"Authorization": f"Bearer {login.json()['token']}"}
            decided = client.post(f"/review/api/cases/{number}/decision", json={"action": "approve", "note": "walkthrough"}, headers=staff)
            decided.raise_for_status()
            out(f"   case {number}: {decided.json()['status']}")

            out("5. the EHR's endpoint receives the decision")
            deadline = time.monotonic() + timeout
            event = None
            while time.monotonic() < deadline and event is None:
                for b in listener.RequestHandlerClass.received:
                    params = {p["name"]: p for p in b["entry"][0]["resource"]["parameter"]}
                    if params["type"]["valueCode"] == "event-notification":
                        event = b
                time.sleep(0.1)
            if event is None:
                raise RuntimeError("no notification arrived")
            focus = next(e["resource"] for e in event["entry"][1:] if e.get("resource", {}).get("resourceType") == "Bundle")
            result["notified"] = _review_action(focus)
            out(f"   notification for Subscription/{sub_id}: {result['notified']} ({focus['entry'][0]['resource'].get('disposition')})")
            client.delete(f"/fhir/Subscription/{sub_id}")
    finally:
        listener.shutdown()
    return result
