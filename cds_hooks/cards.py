"""Card builders: the CRD response types other than coverage information.

- Instructions: text only (``detail``), no links, no suggestions.
- External Reference: the payer's policy pages, every link ``absolute``. Never a portal to request
  prior authorization (CRD resp-17); rule files carry policy links only.
- Propose Alternate Request: one ``update`` of the draft order with a covered alternative code.
- Request Form Completion: a ``create`` of a Task (profile-taskquestionnaire) naming the
  Questionnaire, only when DTR cannot serve it (CRD resp-59).
- Update Coverage Records: one ``update`` of the EHR's Coverage with the payer's current values; a
  systemAction, not a card, on the clinician-facing order-select and order-sign (resp-70).

Each card has a ``uuid``, a summary under 140 characters, ``source.label`` (the payer) and
``source.topic`` from the CRD card types (system per version), and names the orders it is about.
Cards are returned most important first and cut to ``max-cards``.
"""

from __future__ import annotations

import time
from typing import Any

from cds_hooks.ids import new_hex, new_uuid
from cds_hooks.coverage_info import EXT_URL
from server.rules.model import Determination

TOPIC_20 = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
TOPIC_22 = "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
TOPIC_DISPLAY = {
    "coverage-info": "Coverage Information", "guideline": "Guideline", "limits": "Limits", "network": "Network",
    "therapy-alternatives-opt": "Optional Therapy Alternatives", "therapy-alternatives-req": "Required Therapy Alternatives",
    "insurance": "Insurance",
}
SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
CRD_TEMP = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"

DTR_QUESTIONNAIRE_CHECK_TTL = 30.0


def summary(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) < 140 else text[:136].rstrip() + "..."


def _base(req, topic: str, text: str, source_label: str, about: list[str], indicator: str = "info") -> dict:
    card: dict = {
        "uuid": new_uuid(),
        "summary": summary(text),
        "indicator": indicator,
        "source": {"label": source_label,
                   "topic": {"system": TOPIC_22 if req.version.is22 else TOPIC_20, "code": topic, "display": TOPIC_DISPLAY.get(topic, topic)}},
    }
    if about:
        card["extension"] = {"davinci-crd.associated-resource": [{"reference": ref} for ref in about]}
    return card


def instructions(req, topic: str, text: str, detail: str, source_label: str, about: list[str], priority: int = 5,
                 indicator: str = "info") -> tuple[int, dict]:
    card = _base(req, topic, text, source_label, about, indicator)
    card["detail"] = detail
    return priority, card


def _name(resource: dict, det: Determination) -> str:
    code = det.matched_code or {}
    return code.get("display") or (f"{code.get('code')}" if code.get("code") else "") or f"{resource.get('resourceType')}/{resource.get('id')}"


def _with_code(resource: dict, coding: dict) -> dict:
    """The draft order with its code replaced by an alternative (and no stale coverage information)."""
    new = {k: v for k, v in resource.items()}
    new_coding = {k: coding[k] for k in ("system", "code", "display") if coding.get(k)}
    cc = {"coding": [new_coding], "text": coding.get("display") or coding["code"]}
    rtype = resource.get("resourceType")
    if rtype == "MedicationRequest":
        new.pop("medicationReference", None)
        new["medicationCodeableConcept"] = cc
    elif rtype == "DeviceRequest":
        new.pop("codeReference", None)
        new["codeCodeableConcept"] = cc
    else:
        new["code"] = cc
    if isinstance(new.get("extension"), list):
        new["extension"] = [e for e in new["extension"] if not (isinstance(e, dict) and e.get("url") == EXT_URL)]
        if not new["extension"]:
            new.pop("extension")
    return new


# Request types whose performer an in-network proposal may change, and the shape of that element.
_PERFORMER = {"ServiceRequest": ("performer", "list"), "DeviceRequest": ("performer", "one"), "MedicationRequest": ("performer", "one")}


def _with_performer(resource: dict, site: dict) -> dict:
    new = dict(resource)
    ref = {"reference": site["reference"], "display": site["display"]}
    new["performer"] = [ref] if _PERFORMER[resource["resourceType"]][1] == "list" else ref
    if isinstance(new.get("extension"), list):
        new["extension"] = [e for e in new["extension"] if not (isinstance(e, dict) and e.get("url") == EXT_URL)]
        if not new["extension"]:
            new.pop("extension")
    return new


def for_determination(req, resource: dict, det: Determination, source_label: str, gathered, crd_state, dtr_cache: dict,
                      payer=None) -> list[tuple[int, dict]]:
    opts = req.options
    ref = f"{resource.get('resourceType')}/{resource.get('id')}"
    name = _name(resource, det)
    out: list[tuple[int, dict]] = []
    ordering_hook = req.hook in ("order-sign", "order-select")

    # Propose Alternate Request
    if ordering_hook and det.alternatives and resource.get("id") and resource.get("resourceType") != "CommunicationRequest":
        topic = "therapy-alternatives-req" if det.covered == "not-covered" else "therapy-alternatives-opt"
        if opts.get(topic, True):
            alt = det.alternatives[0]
            alt_name = alt.get("display") or alt["code"]
            card = _base(req, topic, f"Covered alternative to {name}: {alt_name}", source_label, [ref],
                         "warning" if det.covered == "not-covered" else "info")
            card["detail"] = (f"For {ref}: {alt.get('note') or 'a covered alternative'}. "
                              f"Accept the suggestion to order {alt_name} ({alt['code']}) instead.")
            card["suggestions"] = [{"label": summary(f"Order {alt_name} instead"), "uuid": new_uuid(), "isRecommended": True,
                                    "actions": [{"type": "update", "description": f"Change {ref} to {alt_name}",
                                                 "resource": _with_code(resource, alt)}]}]
            card["selectionBehavior"] = "at-most-one"
            out.append((2 if topic.endswith("req") else 4, card))

    # Instructions: limits, network, payer instructions
    if det.max_units is not None and opts.get("limits", True) and det.covered != "not-covered":
        over = (det.max_units is not None and any("exceeds" in s for s in det.trace))
        text = (f"{name}: at most {det.max_units:g} units per request are authorized" +
                ("; this order asks for more" if over else ""))
        out.append(instructions(req, "limits", text, f"For {ref}: {text}. Requests above the limit are approved for "
                                f"{det.max_units:g} units.", source_label, [ref], 3 if over else 6, "warning" if over else "info"))
    if det.reason and det.reason.get("code") == "auth-out-network" and opts.get("network", True):
        sites = list(getattr(crd_state, "preferred_sites", lambda: [])())
        if ordering_hook and sites and resource.get("id") and "performer" in _PERFORMER.get(resource.get("resourceType"), ()):
            site = sites[0]
            card = _base(req, "network", f"{name}: out of network; {site['display']} is in network", source_label, [ref], "warning")
            card["detail"] = f"For {ref}: {det.reason.get('display')} Accept the suggestion to have it performed at {site['display']}."
            card["suggestions"] = [{"label": summary(f"Perform at {site['display']} (in network)"), "uuid": new_uuid(),
                                    "isRecommended": True,
                                    "actions": [{"type": "update", "description": f"Set the performer of {ref} to {site['display']}",
                                                 "resource": _with_performer(resource, site)}]}]
            card["selectionBehavior"] = "at-most-one"
            out.append((3, card))
        else:
            out.append(instructions(req, "network", f"{name}: the ordering provider is out of network for this plan",
                                    f"For {ref}: {det.reason.get('display')}", source_label, [ref], 3, "warning"))
    if det.instructions and opts.get("guideline", True):
        detail = f"For {ref}:\n\n" + "\n".join(f"- {i}" for i in det.instructions)
        out.append(instructions(req, "guideline", f"{source_label} instructions for {name}", detail, source_label, [ref], 5))

    # External Reference: the policy behind the answer
    if det.links and opts.get("guideline", True):
        card = _base(req, "guideline", f"{source_label} coverage policy for {name}", source_label, [ref])
        card["detail"] = f"The payer policy that applies to {ref}."
        card["links"] = [{"label": link["label"], "url": link["url"], "type": "absolute"} for link in det.links]
        out.append((7, card))

    # Request Form Completion, only where DTR cannot serve the questionnaire
    if (req.primary and det.doc_needed and det.questionnaires and opts.get("coverage-info", True)
            and resource.get("id") and not all(crd_state.dtr_available(q, dtr_cache) for q in det.questionnaires)):
        for q in det.questionnaires:
            if crd_state.dtr_available(q, dtr_cache):
                continue
            out.append((1, form_completion(req, resource, q, source_label, name, payer_reference(payer, gathered))))
    return out


def payer_reference(payer, gathered) -> dict:
    """The payer as the EHR knows it: the Coverage's own payor reference where it names an Organization,
    with the payer's identifier and name so that it reads without resolving anything."""
    out: dict = {}
    for cov in (getattr(gathered, "coverages", None) or []):
        for p in cov.get("payor") or []:
            if isinstance(p, dict) and isinstance(p.get("reference"), str) and p["reference"].split("/")[-2:-1] == ["Organization"]:
                out["reference"] = p["reference"]
                break
        if out:
            break
    if payer is not None:
        ident = next(((s, v) for s, v in payer.identifiers if s), None)
        if ident:
            out["identifier"] = {"system": ident[0], "value": ident[1]}
        out["display"] = payer.name
    return out or {"display": "payer"}


def _unversioned(canonical: str) -> str:
    # Task.input carries the Questionnaire's canonical URL without its "|version": a plain http(s) URL is
    # what CRD clients (and the Inferno CRD kit, which parses it as a URI) can resolve.
    return canonical.split("|", 1)[0]


def form_completion(req, resource: dict, questionnaire: str, source_label: str, name: str, requester: dict | None = None) -> dict:
    ref = f"{resource['resourceType']}/{resource['id']}"
    task: dict = {
        "resourceType": "Task",
        "id": f"precert-form-{new_hex(12)}",
        "basedOn": [{"reference": ref}],
        "status": "ready",
        "intent": "order",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire"}]},
        "for": {"reference": f"Patient/{req.patient_id}"},
        "authoredOn": time.strftime("%Y-%m-%d", time.gmtime()),
        "requester": requester or {"display": source_label},
        "reasonCode": {"coding": [{"system": CRD_TEMP, "code": "reason-prior-auth"}], "text": "Needed for prior authorization"},
        "input": [{"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire"}], "text": "questionnaire"},
                   "valueCanonical": _unversioned(questionnaire)}],
    }
    if not req.version.is22:
        task["input"].append({"type": {"coding": [{"system": CRD_TEMP, "code": "after-completion-action"}], "text": "afterCompletion"},
                              "valueCodeableConcept": {"coding": [{"system": CRD_TEMP, "code": "prior-auth-include", "display": "Include in prior authorization"}]}})
    card = _base(req, "coverage-info", f"Complete the {source_label} form for {name}", source_label, [ref])
    card["detail"] = (f"Prior authorization for {ref} needs documentation. Fill in the form "
                      f"({questionnaire}) and include it with the prior authorization request.")
    card["suggestions"] = [{"label": "Add a task to complete the form", "uuid": new_uuid(),
                            "actions": [{"type": "create", "description": f"Task to complete {questionnaire}", "resource": task}]}]
    card["selectionBehavior"] = "at-most-one"
    return card


def coverage_update(req, coverage: dict, fix: dict, source_label: str) -> Any:
    """The EHR's Coverage updated with the payer's values: a card, or a systemAction on order-select/sign."""
    updated = {**coverage, **fix["changes"]}
    ref = f"Coverage/{coverage.get('id')}"
    action = {"type": "update", "description": f"Update {ref} from {source_label}'s records: {fix['summary']}", "resource": updated}
    if req.hook in ("order-sign", "order-select"):
        return action
    card = _base(req, "insurance", f"Update the patient's coverage record: {fix['summary']}", source_label, [ref])
    card["detail"] = f"{source_label}'s record of {ref} differs from the EHR's: {fix['summary']}."
    card["suggestions"] = [{"label": "Update the coverage record", "uuid": new_uuid(), "actions": [action]}]
    card["selectionBehavior"] = "at-most-one"
    return (2, card)


def finish(cards: list[tuple[int, dict]], actions: list[dict], opts: dict) -> dict:
    limit = opts.get("max-cards", 10)
    ordered = [c for _, c in sorted(cards, key=lambda pc: pc[0])]
    # The same instruction for several orders is said once.
    seen, unique = set(), []
    for c in ordered:
        key = (c["summary"], c["source"]["topic"]["code"], c.get("detail"))
        if key in seen:
            continue
        seen.add(key)
        unique.append(c)
    out: dict = {"cards": unique[:limit] if isinstance(limit, int) else unique}
    if actions:
        out["systemActions"] = actions
    return out
