"""Seeded hostile input, a few hundred requests per endpoint family: whatever a client sends, the
answer is never a 5xx and the connection is never dropped.

Each case starts from a valid request of its family (an official example where there is one) and is
broken in one to three ways: values swapped for other types, nulls, huge numbers, odd strings,
unknown resource types, deep or wide JSON, truncated bytes, odd content types, odd paths and query
strings. The seed is fixed (``PRECERT_HOSTILE_SEED``), so a failure names a case that replays.

Besides the hand-written families, one family walks every route the app serves (whatever router
added it), and a last test checks, against the app's own route table, that every route and method
was sent hostile input: a route added later is exercised, or the suite says which one is not.
"""

from __future__ import annotations

import copy
import json
import os
import random
from urllib.parse import quote

import re

import httpx
import orjson
import pytest
from starlette.routing import compile_path

from server.auth.policy import iter_routes
from server.fhir.operations import registry
from server.fhir.resources import PROVIDERS
from tests.pas_support import pas_request
from tests.support import CRD_FIXTURES

SEED = int(os.environ.get("PRECERT_HOSTILE_SEED", "20261202"))
CASES = int(os.environ.get("PRECERT_HOSTILE_CASES", "300"))

STRINGS = [
    "", " ", "\u0000", "\ud7ff\ue000", "😀" * 50, "a" * 5000, "../../etc/passwd", "%00", "'; drop table x; --",
    "<script>alert(1)</script>", "${jndi:ldap://x}", "{\"$gt\": \"\"}", "$where", "\\", "\r\nX-Injected: 1",
    "Patient/../../x", "urn:uuid:not-a-uuid", "#", "1e309", "-0", "NaN", "2026-13-45T99:99:99Z", "|", "a|b|c",
]
NUMBERS = [0, -1, 1.5, 10**20, -(10**20), 2**63, 1e308, -1e-308]


def odd_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(10)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice(NUMBERS)
    if kind == 3:
        return rng.choice(STRINGS)
    if kind == 4 and depth < 3:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5 and depth < 3:
        return {rng.choice(["resourceType", "id", "x", "$gt", "extension", ""]): odd_value(rng, depth + 1)}
    if kind == 6:
        return {"resourceType": rng.choice(["NoSuchThing", "Patient", "Bundle", "", "patient", "OperationOutcome"])}
    if kind == 7:
        return [0] * rng.choice([10, 2000, 12000])
    if kind == 8:
        return rng.choice([{"reference": s} for s in STRINGS[:8]])
    return rng.choice(STRINGS)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value[:20]):
            yield from paths(v, prefix + (i,))


def mutate(rng: random.Random, doc):
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        all_paths = list(paths(doc))
        target = rng.choice(all_paths)
        if not target:
            doc = odd_value(rng) if rng.random() < 0.3 else doc
            continue
        parent = doc
        for part in target[:-1]:
            parent = parent[part]
        key = target[-1]
        action = rng.randrange(4)
        if action == 0 and isinstance(parent, dict):
            del parent[key]
        elif action == 1 and isinstance(parent, dict):
            parent[rng.choice(STRINGS[:6] + ["contained", "modifierExtension", "_status"])] = odd_value(rng)
        else:
            parent[key] = odd_value(rng)
    return doc


def deep(n: int) -> bytes:
    return b'{"resourceType":"Parameters","parameter":' + b"[" * n + b"]" * n + b"}"


def body_of(rng: random.Random, doc) -> tuple[bytes, str]:
    roll = rng.random()
    ctype = rng.choice(["application/fhir+json"] * 6 + ["application/json", "text/plain", "application/xml", "", "application/fhir+json; charset=latin-1"])
    if roll < 0.7:
        return json.dumps(mutate(rng, doc)).encode(), ctype
    raw = orjson.dumps(doc)
    if roll < 0.8:
        return raw[: rng.randrange(len(raw))], ctype
    if roll < 0.85:
        return deep(rng.choice([70, 500, 5000])), ctype
    if roll < 0.9:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200))), ctype
    if roll < 0.95:
        return b"", ctype
    return json.dumps(mutate(rng, doc)).replace("}", "}" * rng.randint(1, 3), 1).encode(), ctype


def odd_id(rng: random.Random) -> str:
    return quote(rng.choice(STRINGS + ["x" * 65, "a.b", "-", "123", "$op", "_history"]) or "x", safe="")


def odd_query(rng: random.Random, names: list[str]) -> list[tuple[str, str]]:
    out = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(names) + rng.choice(["", "", ":contains", ":exact", ":missing", ":not", ":identifier", ":Patient", ":bogus"])
        out.append((name, rng.choice(STRINGS + ["gt2020", "le", "ap2026-01-01", "http://x|", "|y", "true", "1000000"])))
    return out


# ---------------------------------------------------------------------------------- families
def fhir_rest(rng, client):
    rtype = rng.choice(["Patient", "Claim", "Bundle", "Coverage", "Questionnaire", "Subscription", "NoSuchThing", "patient", "Patient%00"])
    action = rng.randrange(6)
    if action == 0:
        return client.get(f"/fhir/{rtype}", params=odd_query(rng, ["name", "family", "identifier", "_id", "_lastUpdated", "_count", "_offset", "_sort", "_include", "_revinclude", "status", "patient", "url", "_elements", "_summary"]))
    if action == 1:
        return client.get(f"/fhir/{rtype}/{odd_id(rng)}" + rng.choice(["", "/_history", f"/_history/{odd_id(rng)}"]))
    if action == 2:
        body, ctype = body_of(rng, {"resourceType": rtype, "name": [{"family": "Hostile"}], "contained": [{"resourceType": "Patient", "id": "c"}]})
        return client.post(f"/fhir/{rtype}", content=body, headers={"Content-Type": ctype})
    if action == 3:
        body, ctype = body_of(rng, {"resourceType": rtype, "id": "hostile-1", "name": [{"family": "Hostile"}]})
        return client.put(f"/fhir/{rtype}/{rng.choice(['hostile-1', odd_id(rng)])}", content=body, headers={"Content-Type": ctype, "If-Match": rng.choice(['W/"1"', "x", "", 'W/"99999999999999999999"'])})
    if action == 4:
        return client.delete(f"/fhir/{rtype}/{odd_id(rng)}")
    body, _ = body_of(rng, {})
    return client.post(f"/fhir/{rtype}/_search", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})


def pas_operations(rng, client):
    op = rng.choice(["$submit", "$inquire", "$submit", "$bogus"])
    body, ctype = body_of(rng, pas_request(rng.choice(["2.0.1", "2.2.1"])))
    return client.post(f"/fhir/Claim/{op}", content=body, headers={"Content-Type": ctype})


def dtr_operations(rng, client):
    if rng.random() < 0.5:
        doc = {"resourceType": "Parameters", "parameter": [
            {"name": "coverage", "resource": {"resourceType": "Coverage", "status": "active"}},
            {"name": "order", "resource": {"resourceType": "ServiceRequest", "status": "draft", "intent": "order", "subject": {"reference": "Patient/x"}}},
            {"name": "questionnaire", "valueCanonical": "http://example.org/Questionnaire/x"},
        ]}
        body, ctype = body_of(rng, doc)
        return client.post("/fhir/Questionnaire/$questionnaire-package", content=body, headers={"Content-Type": ctype})
    doc = {"resourceType": "QuestionnaireResponse", "status": "in-progress", "questionnaire": "#q",
           "contained": [{"resourceType": "Questionnaire", "id": "q", "status": "active", "item": [{"linkId": "1", "type": "boolean"}]}],
           "item": [{"linkId": "1", "answer": [{"valueBoolean": True}]}]}
    if rng.random() < 0.5:
        doc = {"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "resource": doc}]}
    body, ctype = body_of(rng, doc)
    return client.post("/fhir/Questionnaire/$next-question", content=body, headers={"Content-Type": ctype})


CRD_REQUESTS = [json.loads((CRD_FIXTURES / n).read_text()) for n in ("CRDServiceRequest.json", "CRDServiceRequest2.json")]


def cds_services(rng, client):
    service = rng.choice(["order-sign-crd", "order-select-crd", "appointment-book-crd", "encounter-start-crd", "order-dispatch-crd", "nope", odd_id(rng)])
    suffix = rng.choice(["", "", "", "/feedback"])
    body, ctype = body_of(rng, rng.choice(CRD_REQUESTS))
    headers = {"Content-Type": ctype or "application/json"}
    if rng.random() < 0.3:
        headers["Authorization"] = rng.choice(["Bearer x.y.z", "Bearer", "Basic abc", "Bearer " + "a" * 3000])
    return client.post(f"/cds-services/{service}{suffix}", content=body, headers=headers)


def auth_token(rng, client):
    fields = {"grant_type": rng.choice(["client_credentials", "password", "", "x" * 300]),
              "client_assertion_type": rng.choice(["urn:ietf:params:oauth:client-assertion-type:jwt-bearer", "", "x"]),
              "client_assertion": rng.choice(["a.b.c", "", "e30.e30.", "x" * 5000, "\u0000"]),
              "scope": rng.choice(["system/*.read", "", "system/Claim.c " * 100, "\ud7ff"])}
    for key in rng.sample(list(fields), rng.randrange(3)):
        del fields[key]
    if rng.random() < 0.2:
        body, ctype = body_of(rng, fields)
        return client.post("/auth/token", content=body, headers={"Content-Type": ctype})
    return client.post("/auth/token", data=fields)


def review_api(rng, client, token: str):
    headers = {"Authorization": rng.choice([f"Bearer {token}"] * 4 + ["Bearer nope", ""])}
    case = odd_id(rng)
    roll = rng.randrange(4)
    if roll == 0:
        return client.get("/review/api/cases", params=odd_query(rng, ["status", "per", "page", "q", "sort", "assignee", "due"]), headers=headers)
    if roll == 1:
        return client.get(f"/review/api/cases/{case}", headers=headers)
    body, ctype = body_of(rng, {"action": rng.choice(["approve", "deny", "pend", "x"]), "reason": "x", "note": "n"})
    headers["Content-Type"] = ctype or "application/json"
    return client.post(f"/review/api/cases/{case}/{rng.choice(['decision', 'assign'])}", content=body, headers=headers)


def admin(rng, client):
    roll = rng.randrange(4)
    if roll == 0:
        return client.get(rng.choice(["/admin/crd/calls", "/admin/rules", "/admin/dtr/templates", "/admin/dtr/questionnaire-errors"]), params=odd_query(rng, ["limit", "questionnaire", "service", "since"]))
    body, ctype = body_of(rng, {"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": "x"}], "name": "x", "jwks_url": "http://x"})
    path = rng.choice(["/admin/rules/evaluate", "/admin/rules/reload", "/admin/auth/clients", "/admin/auth/staff"])
    return client.post(path, content=body, headers={"Content-Type": ctype or "application/json"})


FAMILIES = {
    "fhir-rest": fhir_rest,
    "pas-operations": pas_operations,
    "dtr-operations": dtr_operations,
    "cds-services": cds_services,
    "auth-token": auth_token,
    "review-api": review_api,
    "admin": admin,
}


# ---------------------------------------------------------------------------------- every route
SENT: set[tuple[str, str]] = set()  # (method, path) of every hostile request sent in this module


def record(request: httpx.Request) -> None:
    SENT.add((request.method, request.url.raw_path.decode("latin-1").split("?", 1)[0]))


def hostile_client(base_url) -> httpx.Client:
    # From an address of its own, so its failed sign-ins slow down no other test's (127.0.0.1).
    return httpx.Client(base_url=str(base_url), timeout=30, event_hooks={"request": [record]},
                        transport=httpx.HTTPTransport(local_address="127.0.0.66"))


def route_table(app) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route the app serves, HEAD aside."""
    return [(m, path) for path, methods in iter_routes(app) for m in methods if m != "HEAD"]


PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
OPERATION_NAMES = sorted({op.name for op in registry.system_level()} | {op.name for t in PROVIDERS for op in registry.for_type(t)})


def fill(rng: random.Random, template: str) -> str:
    """A concrete path for ``template``: each parameter an odd value, or a plausible one."""
    def value(m: re.Match) -> str:
        name, conv = m.group(1), m.group(2)
        if name == "rtype":
            return rng.choice(sorted(PROVIDERS) + ["NoSuchThing", "patient"])
        if name == "name":
            return rng.choice(OPERATION_NAMES + ["unknown-op", "$x"])
        if name == "version":
            return rng.choice(["2.0.1", "2.2.1", "9.9.9", odd_id(rng)])
        if conv == "path":
            return "/".join(odd_id(rng) for _ in range(rng.randint(1, 3)))
        if conv == "int":
            return str(rng.choice([0, 1, 2**40]))
        return odd_id(rng) if rng.random() < 0.7 else rng.choice(["x-1", "pat-001", "sample-1"])
    return PARAM.sub(value, template)


def every_route(rng, client, method: str, template: str, token: str):
    path = fill(rng, template)
    headers = {}
    if rng.random() < 0.5:
        headers["Authorization"] = rng.choice([f"Bearer {token}", "Bearer x.y.z", "Bearer", "Basic abc"])
    params = odd_query(rng, ["_count", "status", "patient", "limit", "q", "page", "format", "next", "x"]) if rng.random() < 0.5 else None
    if method in ("POST", "PUT", "PATCH"):
        doc = rng.choice([{"resourceType": "Parameters", "parameter": [{"name": "x", "valueString": "y"}]},
                          {"username": "reviewer", "password": "x", "action": "approve", "note": "n"},
                          {"resourceType": "Patient", "name": [{"family": "Hostile"}]}])
        body, ctype = body_of(rng, doc)
        if rng.random() < 0.2:
            body, ctype = b"username=x&password=y&action=approve", "application/x-www-form-urlencoded"
        headers["Content-Type"] = ctype or "application/json"
        return client.request(method, path, content=body, headers=headers, params=params)
    return client.request(method, path, headers=headers, params=params)


def check(r: httpx.Response, case, failures: list) -> None:
    if r.status_code >= 500:
        failures.append((case, r.status_code, r.request.method, str(r.request.url)[:200], r.text[:300]))
    if r.headers.get("connection", "").lower() == "close" and r.status_code not in (408, 413, 400):
        failures.append((case, "connection closed by the server", r.status_code, str(r.request.url)[:200]))


@pytest.fixture(scope="module")
def reviewer_token(client):
    # Its own client, so the session cookie stays out of the suite's shared one.
    with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
        r = own.post("/staff/login", json={"username": "reviewer", "password": "reviewer-sandbox"})
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hostile_input_never_gets_a_5xx_nor_drops_the_connection(client, reviewer_token, family):
    rng = random.Random(f"{SEED}-{family}")
    failures = []
    sent = 0
    with hostile_client(client.base_url) as c:
        for case in range(CASES):
            make = FAMILIES[family]
            try:
                r = make(rng, c, reviewer_token) if family == "review-api" else make(rng, c)
            except httpx.TransportError as exc:
                failures.append((case, "connection dropped", repr(exc)))
                continue
            finally:
                sent += 1
            check(r, case, failures)
    print(f"{family}: {sent} hostile requests, {len(failures)} failures")
    assert not failures, failures[:5]


PER_ROUTE = int(os.environ.get("PRECERT_HOSTILE_PER_ROUTE", "4"))


def test_every_route_gets_hostile_input_and_never_a_5xx(server, client, reviewer_token):
    rng = random.Random(f"{SEED}-every-route")
    failures = []
    routes = route_table(server.app)
    with hostile_client(client.base_url) as c:
        for i in range(PER_ROUTE):
            for method, template in routes:
                case = (i, method, template)
                try:
                    r = every_route(rng, c, method, template, reviewer_token)
                except httpx.TransportError as exc:
                    failures.append((case, "connection dropped", repr(exc)))
                    continue
                check(r, case, failures)
    print(f"every-route: {PER_ROUTE * len(routes)} hostile requests over {len(routes)} routes, {len(failures)} failures")
    assert not failures, failures[:5]


def test_the_generator_exercises_every_route_the_app_serves(server, client, reviewer_token):
    """Each (method, route) of the app's route table got at least one request this module sent,
    matched the way the router matches it (the first route whose pattern and methods fit)."""
    if not SENT:  # this test alone: send the every-route pass first
        test_every_route_gets_hostile_input_and_never_a_5xx(server, client, reviewer_token)
    routes = route_table(server.app)
    compiled = [(m, t, compile_path(t)[0]) for m, t in routes]
    served: set[tuple[str, str]] = set()
    for method, path in SENT:
        for m, template, regex in compiled:
            if m == method and regex.match(path):
                served.add((m, template))
                break
    missing = sorted(set(routes) - served)
    assert not missing, f"routes no hostile request reached: {missing}"
