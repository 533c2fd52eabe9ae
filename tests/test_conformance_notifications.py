"""PAS Subscription notifications checked as the R4 Subscriptions Backport IG (1.1.0) defines them.

The Backport package is not available to ship, so each notification Bundle is validated against base
R4 ``Bundle`` (and its SubscriptionStatus against base ``Parameters``, as R4 carries it) with zero
errors, and :func:`backport_problems` checks what the Backport profiles
``backport-subscription-notification-r4`` and ``backport-subscription-status-r4`` require on top:
a history Bundle whose first entry is the status Parameters; ``subscription`` (Reference) 1..1,
``topic`` (canonical) 0..1, ``status`` (code, subscription-status) 1..1, ``type`` (code,
subscription-notification-type) 1..1, ``events-since-subscription-start`` (string) 0..1,
``notification-event`` with ``event-number`` (string) 1..1, ``timestamp`` (instant) 0..1, ``focus``
(Reference) 0..1, ``additional-context`` (Reference) 0..*; and, per payload content, a focus that
an ``id-only`` notification names without content and a ``full-resource`` one carries in the Bundle.
"""

from __future__ import annotations

import pytest

from server.fhir import profiles
from tests.pas_support import FHIR, Receiver, claim_response, notification_type, pas_subscription
from tests.test_pas_review_notify import events_for, npi, pended, quick_retries  # noqa: F401 (fixture)
from tests.test_validator_responses import conformance_errors

STATUS_CODES = {"requested", "active", "error", "off", "entered-in-error"}
NOTIFICATION_TYPES = {"handshake", "heartbeat", "event-notification", "query-status", "query-event"}
PARAMETER_TYPES = {
    "subscription": ("valueReference", 1, 1), "topic": ("valueCanonical", 0, 1), "status": ("valueCode", 1, 1),
    "type": ("valueCode", 1, 1), "events-since-subscription-start": ("valueString", 0, 1),
    "notification-event": (None, 0, None), "error": ("valueCodeableConcept", 0, None),
}
PART_TYPES = {"event-number": ("valueString", 1, 1), "timestamp": ("valueInstant", 0, 1), "focus": ("valueReference", 0, 1),
              "additional-context": ("valueReference", 0, None)}


def _counted(params: list[dict], allowed: dict, where: str, out: list[str]) -> dict[str, list[dict]]:
    by_name: dict[str, list[dict]] = {}
    for p in params:
        by_name.setdefault(p.get("name"), []).append(p)
    for name, (value_key, low, high) in allowed.items():
        found = by_name.get(name, [])
        if len(found) < low or (high is not None and len(found) > high):
            out.append(f"{where}: {name} appears {len(found)} times (allowed {low}..{high or '*'})")
        for p in found:
            if value_key and value_key not in p:
                out.append(f"{where}: {name} has no {value_key}")
    return by_name


def backport_problems(bundle: dict, content: str) -> list[str]:
    """What the Backport R4 notification and status profiles require, beyond base R4."""
    out: list[str] = []
    if bundle.get("type") != "history":
        out.append("Bundle.type must be history")
    entries = bundle.get("entry") or []
    status = (entries[0].get("resource") if entries else None) or {}
    if status.get("resourceType") != "Parameters":
        return out + ["backport-notification-bundle-r4-1: the first entry must be the SubscriptionStatus Parameters"]
    params = _counted(status.get("parameter") or [], PARAMETER_TYPES, "SubscriptionStatus", out)
    code = lambda name: (params.get(name) or [{}])[0].get("valueCode")  # noqa: E731
    if code("status") not in STATUS_CODES:
        out.append(f"status {code('status')!r} is not in subscription-status")
    kind = code("type")
    if kind not in NOTIFICATION_TYPES:
        out.append(f"type {kind!r} is not in subscription-notification-type")
    since = (params.get("events-since-subscription-start") or [{}])[0].get("valueString")
    if since is not None and not since.isdigit():
        out.append("events-since-subscription-start must be a count")
    events = params.get("notification-event") or []
    for i, event in enumerate(events):
        parts = _counted(event.get("part") or [], PART_TYPES, f"notification-event[{i}]", out)
        number = (parts.get("event-number") or [{}])[0].get("valueString", "")
        if not str(number).isdigit():
            out.append(f"notification-event[{i}].event-number must be a number")
        focus = ((parts.get("focus") or [{}])[0].get("valueReference") or {}).get("reference")
        if kind == "event-notification" and content in ("id-only", "full-resource"):
            if not focus:
                out.append(f"notification-event[{i}]: an {content} notification names its focus")
            held = [e for e in entries[1:] if e.get("fullUrl") == focus]
            if not held:
                out.append(f"notification-event[{i}]: the focus {focus} has no entry in the Bundle")
            elif content == "full-resource" and "resource" not in held[0]:
                out.append(f"notification-event[{i}]: a full-resource notification carries the focus resource")
            elif content == "id-only" and "resource" in held[0]:
                out.append(f"notification-event[{i}]: an id-only notification carries no resource content")
    if kind == "event-notification" and not events:
        out.append("an event notification has a notification-event")
    if kind in ("handshake", "heartbeat") and (events or len(entries) > 1):
        out.append(f"a {kind} carries no events")
    for i, e in enumerate(entries):
        if "request" not in e or "response" not in e:
            out.append(f"Bundle.entry[{i}] of a history Bundle has request and response")
    return out


def check_notification(bundle: dict, content: str) -> None:
    errors = conformance_errors(bundle, "Bundle") + conformance_errors(bundle["entry"][0]["resource"], "Parameters")
    errors += backport_problems(bundle, content)
    print("\n".join(errors))
    assert errors == []


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.mark.parametrize("content", ["full-resource", "id-only"])
def test_handshake_and_decision_notifications_meet_r4_and_the_backport_profiles(client, receiver, content):
    org = npi()
    r = client.post("/fhir/Subscription", json=pas_subscription(receiver.url, org, content=content), headers=FHIR)
    assert r.status_code == 201, r.text
    handshake = receiver.wait_for(lambda b: notification_type(b) == "handshake")[0]
    check_notification(handshake, content)
    body, number = pended(client, org)
    assert client.post(f"/review/api/cases/{number}/decision", json={"action": "approve"}).status_code == 200
    note = receiver.wait_for(events_for(receiver, claim_response(body)["id"] if content == "full-resource" else None))[0]
    check_notification(note, content)
    if content == "full-resource":
        focus = note["entry"][1]["resource"]
        assert conformance_errors(focus, "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-response-bundle",
                                  "hl7.fhir.us.davinci-pas-2.2.1") == []


def test_subscription_status_operation_answer_meets_r4_parameters_and_the_backport_status_profile(client, receiver):
    sub = client.post("/fhir/Subscription", json=pas_subscription(receiver.url, npi()), headers=FHIR).json()
    r = client.get(f"/fhir/Subscription/{sub['id']}/$status")
    assert r.status_code == 200, r.text
    body = r.json()
    found = [e["resource"] for e in body.get("entry", [])] if body["resourceType"] == "Bundle" else [body]
    status = next(res for res in found if res["resourceType"] == "Parameters")
    assert conformance_errors(status, "Parameters") == []
    assert backport_problems({"type": "history", "entry": [{"resource": status, "request": {}, "response": {}}]}, "full-resource") == []


def test_the_backport_checks_catch_what_the_profiles_require():
    """Each check the Backport profiles add, broken once."""
    good = {"type": "history", "entry": [
        {"fullUrl": "urn:uuid:1", "request": {"method": "GET", "url": "x"}, "response": {"status": "200"}, "resource": {
            "resourceType": "Parameters", "parameter": [
                {"name": "subscription", "valueReference": {"reference": "Subscription/1"}},
                {"name": "status", "valueCode": "active"}, {"name": "type", "valueCode": "event-notification"},
                {"name": "notification-event", "part": [{"name": "event-number", "valueString": "1"},
                                                        {"name": "focus", "valueReference": {"reference": "urn:uuid:2"}}]}]}},
        {"fullUrl": "urn:uuid:2", "request": {"method": "POST", "url": "Bundle"}, "response": {"status": "201"},
         "resource": {"resourceType": "Bundle", "type": "collection"}}]}
    assert backport_problems(good, "full-resource") == []
    assert backport_problems(good, "id-only")  # content where id-only carries none
    params = good["entry"][0]["resource"]["parameter"]
    for broken in (
        lambda p: p.pop(0),                                # subscription 1..1
        lambda p: p[1].update(valueCode="paused"),         # subscription-status
        lambda p: p[2].update(valueCode="notify"),         # subscription-notification-type
        lambda p: p[3]["part"].pop(0),                     # event-number 1..1
        lambda p: p[3]["part"].pop(1),                     # the focus of a full-resource event
        lambda p: p.pop(3),                                # an event notification has an event
    ):
        copy = profiles.json.loads(profiles.json.dumps(good))
        broken(copy["entry"][0]["resource"]["parameter"])
        assert backport_problems(copy, "full-resource"), broken
    assert params  # the original stays intact
