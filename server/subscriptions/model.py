"""R4 Subscriptions Backport: reading topic-based Subscriptions and building notification Bundles."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import urlparse

from server.fhir.errors import FHIRError, issue
from server.outbound import FORBIDDEN_HEADERS, literal_refusal
from server.pas.constants import TOPIC as PAS_TOPIC
from server.storage import fhir_instant, utcnow

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
EXT_FILTER = BACKPORT + "backport-filter-criteria"
EXT_CONTENT = BACKPORT + "backport-payload-content"
EXT_HEARTBEAT = BACKPORT + "backport-heartbeat-period"
EXT_TIMEOUT = BACKPORT + "backport-timeout"
EXT_MAX_COUNT = BACKPORT + "backport-max-count"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"

TOPICS = {PAS_TOPIC}
FILTER_NAMES = ("org-identifier", "orgIdentifier", "identifier")
CONTENTS = ("empty", "id-only", "full-resource")


def _ext(element: dict | None, url: str):
    for e in (element or {}).get("extension") or []:
        if isinstance(e, dict) and e.get("url") == url:
            for k, v in e.items():
                if k.startswith("value"):
                    return v
    return None


@dataclass
class TopicSubscription:
    id: str
    topic: str
    status: str
    endpoint: str
    content: str
    headers: list[tuple[str, str]]
    payload_type: str
    filters: dict[str, list[str]]
    heartbeat: int | None
    timeout: int
    owner: str | None = None

    @property
    def org_identifiers(self) -> list[str]:
        out: list[str] = []
        for name in FILTER_NAMES:
            out.extend(self.filters.get(name, []))
        return out

    def matches(self, sender_ids: list[str]) -> bool:
        wanted = self.org_identifiers
        if not wanted:
            return True
        return any(w in sender_ids or w.split("|")[-1] in sender_ids for w in wanted)


def parse_filters(subscription: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in (subscription.get("_criteria") or {}).get("extension") or []:
        if isinstance(e, dict) and e.get("url") == EXT_FILTER and isinstance(e.get("valueString"), str):
            text = e["valueString"].split("?", 1)[-1]
            for part in text.split("&"):
                name, _, value = part.partition("=")
                if name and value:
                    out.setdefault(name.strip(), []).extend(v.strip() for v in value.split(",") if v.strip())
    return out


def read_subscription(resource: dict, owner: str | None = None) -> TopicSubscription:
    channel = resource.get("channel") or {}
    headers = []
    for h in channel.get("header") or []:
        if isinstance(h, str) and ":" in h:
            name, _, value = h.partition(":")
            headers.append((name.strip(), value.strip()))
    return TopicSubscription(
        id=resource.get("id", ""),
        topic=resource.get("criteria", ""),
        status=resource.get("status", ""),
        endpoint=channel.get("endpoint", ""),
        content=_ext(channel.get("_payload"), EXT_CONTENT) or "id-only",
        headers=headers,
        payload_type=channel.get("payload") or "application/fhir+json",
        filters=parse_filters(resource),
        heartbeat=_ext(channel, EXT_HEARTBEAT),
        timeout=int(_ext(channel, EXT_TIMEOUT) or 10),
        owner=owner,
    )


def check_subscription(resource: dict, production: bool) -> None:
    """The checks a topic-based rest-hook Subscription must pass before it is stored."""
    problems: list[dict] = []
    topic = resource.get("criteria")
    if topic not in TOPICS:
        problems.append(issue("not-supported", f"Subscription.criteria must be a supported topic ({PAS_TOPIC}), not '{str(topic)[:120]}'", "Subscription.criteria"))
    channel = resource.get("channel") or {}
    if channel.get("type") != "rest-hook":
        problems.append(issue("not-supported", f"Subscription.channel.type must be 'rest-hook', not '{str(channel.get('type'))[:40]}'", "Subscription.channel.type"))
    endpoint = channel.get("endpoint")
    parsed = urlparse(endpoint) if isinstance(endpoint, str) else None
    if not parsed or parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(issue("required", "Subscription.channel.endpoint must be an absolute http(s) URL", "Subscription.channel.endpoint"))
    elif production and parsed.scheme != "https":
        problems.append(issue("security", "Subscription.channel.endpoint must use https", "Subscription.channel.endpoint"))
    elif production and (refused := literal_refusal(endpoint)):
        problems.append(issue("security", f"Subscription.channel.endpoint is not allowed: {refused}", "Subscription.channel.endpoint"))
    payload = channel.get("payload")
    if payload and payload.split(";")[0].strip() not in ("application/fhir+json", "application/json"):
        problems.append(issue("not-supported", f"Subscription.channel.payload '{str(payload)[:60]}' is not supported; use application/fhir+json", "Subscription.channel.payload"))
    content = _ext(channel.get("_payload"), EXT_CONTENT)
    if content is not None and content not in CONTENTS:
        problems.append(issue("code-invalid", f"payload content '{str(content)[:40]}' must be one of {', '.join(CONTENTS)}", "Subscription.channel.payload"))
    for h in channel.get("header") or []:
        if not isinstance(h, str) or ":" not in h or "\n" in h or "\r" in h:
            problems.append(issue("value", "each Subscription.channel.header must be 'Name: value' on one line", "Subscription.channel.header"))
            break
        if h.partition(":")[0].strip().lower() in FORBIDDEN_HEADERS:
            problems.append(issue("security", f"Subscription.channel.header may not set '{h.partition(':')[0].strip()[:40]}'", "Subscription.channel.header"))
            break
    filters = parse_filters(resource)
    if topic == PAS_TOPIC and not any(filters.get(n) for n in FILTER_NAMES):
        problems.append(issue("required", "a PAS subscription needs a filter 'org-identifier=<your organization identifier>' (backport-filter-criteria)", "Subscription.criteria"))
    unknown = [n for n in filters if n not in FILTER_NAMES]
    if unknown:
        problems.append(issue("not-supported", f"filter '{unknown[0][:40]}' is not offered by the PAS topic (use org-identifier)", "Subscription.criteria"))
    if problems:
        raise FHIRError(400, problems)


def status_parameters(sub: TopicSubscription, base: str, kind: str, status: str, events: int, focus: list[tuple[int, str]] = ()) -> dict:
    params: list[dict] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/Subscription/{sub.id}"}},
        {"name": "topic", "valueCanonical": sub.topic},
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events)},
    ]
    for number, ref in focus:
        part = [{"name": "event-number", "valueString": str(number)}, {"name": "timestamp", "valueInstant": fhir_instant(utcnow())}]
        if ref:
            part.append({"name": "focus", "valueReference": {"reference": ref}})
        params.append({"name": "notification-event", "part": part})
    return {"resourceType": "Parameters", "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification_bundle(sub: TopicSubscription, base: str, kind: str, status: str, events: int,
                        event_number: int | None = None, focus_resource: dict | None = None, focus_url: str | None = None) -> dict:
    """A history Bundle: the SubscriptionStatus Parameters first, then the focus per content level."""
    focus_ref = ""
    entries: list[dict] = []
    if kind == "event-notification" and sub.content != "empty":
        if sub.content == "full-resource" and focus_resource is not None:
            focus_ref = f"urn:uuid:{focus_resource.get('id') or uuid.uuid4()}"
            entries.append({"fullUrl": focus_ref, "resource": focus_resource,
                            "request": {"method": "POST", "url": "Bundle"}, "response": {"status": "201"}})
        elif focus_url:
            focus_ref = focus_url
            entries.append({"fullUrl": focus_url, "request": {"method": "GET", "url": focus_url}, "response": {"status": "200"}})
    focus = [(event_number, focus_ref)] if kind == "event-notification" and event_number is not None else []
    status_entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": status_parameters(sub, base, kind, status, events, focus),
        "request": {"method": "GET", "url": f"{base}/Subscription/{sub.id}/$status"},
        "response": {"status": "200"},
    }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": fhir_instant(utcnow()),
        "entry": [status_entry] + entries,
    }
