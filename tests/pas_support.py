"""Building PAS requests from the official examples, and a real notification receiver."""

from __future__ import annotations

import threading
import time
import uuid

import orjson

from tests.support import ThreadedServer, example, free_port

FHIR = {"Content-Type": "application/fhir+json"}
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
CPT = "http://www.ama-assn.org/go/cpt"
MEMBER = "http://precert.example.org/sid/member-id"
NPI = "http://hl7.org/fhir/sid/us-npi"
REFERRAL = "Bundle-ReferralAuthorizationBundleExample.json"


def entry(bundle: dict, rtype: str) -> dict:
    return next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype)


def pas_request(
    version: str = "2.2.1",
    name: str = REFERRAL,
    *,
    code: tuple[str, str] | None = None,
    quantity: float | None = None,
    member: str | None = None,
    provider_npi: str | None = None,
    priority: str | None = None,
) -> dict:
    """An official PAS example request with a fresh Bundle identifier, optionally asking for
    another service, quantity, sandbox member or requesting provider."""
    b = example(f"hl7.fhir.us.davinci-pas-{version}", name)
    b["identifier"] = {"system": "urn:test:bundle", "value": uuid.uuid4().hex}
    claim = b["entry"][0]["resource"]
    if code:
        claim["item"] = claim["item"][:1]
        claim["item"][0]["productOrService"] = {"coding": [{"system": code[0], "code": code[1]}]}
    if quantity is not None:
        claim["item"][0]["quantity"] = {"value": quantity, "unit": "units"}
    if member:
        for e in b["entry"]:
            if e["resource"]["resourceType"] == "Patient":
                e["resource"]["identifier"] = [{"system": MEMBER, "value": member}]
        coverage = entry(b, "Coverage")
        kept_type = next((i["type"] for i in coverage.get("identifier") or [] if i.get("type")), None)
        coverage["identifier"] = [{**({"type": kept_type} if kept_type else {}), "system": MEMBER, "value": member}]
        coverage["subscriberId"] = member
    if provider_npi:
        provider = next(e for e in b["entry"] if claim["provider"]["reference"].endswith(e["resource"]["resourceType"] + "/" + e["resource"]["id"]))
        provider["resource"]["identifier"] = [{"system": NPI, "value": provider_npi}]
    if priority:
        claim["priority"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": priority}]}
    return b


def submit(client, bundle: dict, path: str = "/fhir/Claim/$submit"):
    return client.post(path, content=orjson.dumps(bundle), headers=FHIR)


def claim_response(response_bundle: dict) -> dict:
    first = response_bundle["entry"][0]["resource"]
    assert first["resourceType"] == "ClaimResponse"
    return first


def actions(response_bundle: dict) -> dict[int, str]:
    """{itemSequence: X12 306 review action code} of the ClaimResponse."""
    out = {}
    for item in claim_response(response_bundle).get("item", []):
        for adj in item["adjudication"]:
            for ext in adj.get("extension", []):
                if ext["url"].endswith("extension-reviewAction"):
                    for sub in ext["extension"]:
                        if sub["url"].endswith("extension-reviewActionCode"):
                            out[item["itemSequence"]] = sub["valueCodeableConcept"]["coding"][0]["code"]
    return out


class Receiver:
    """A real HTTP endpoint on loopback that records what is POSTed to it. ``fail`` makes it answer
    503; it can also be started late (nothing listening until then)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.fail = False
        self.lock = threading.Lock()
        self.server: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    async def app(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        status = 503 if self.fail else 200
        if not self.fail:
            with self.lock:
                self.received.append(orjson.loads(body))
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> "Receiver":
        async def asgi(scope, receive, send):
            await self.app(scope, receive, send)

        self.server = ThreadedServer(asgi, self.port).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()
            self.server = None

    def wait_for(self, predicate, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [b for b in self.received if predicate(b)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no matching notification within {timeout}s; got {len(self.received)}")


def notification_type(bundle: dict) -> str:
    params = bundle["entry"][0]["resource"]["parameter"]
    return next(p["valueCode"] for p in params if p["name"] == "type")


def pas_subscription(endpoint: str, org_identifier: str, content: str = "full-resource", filter_name: str = "org-identifier") -> dict:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Receive prior-authorization decisions for my organization",
        "criteria": "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic",
        "_criteria": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria", "valueString": f"{filter_name}={org_identifier}"}]},
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content", "valueCode": content}]},
            "header": ["Authorization: Bearer receiver-secret"],
        },
    }
