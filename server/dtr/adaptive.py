"""Adaptive forms: SDC ``Questionnaire/$next-question`` over any Precert template.

The DTR client holds the state: the QuestionnaireResponse carries a contained Questionnaire
(``dtr-questionnaire-adapt``) listing the questions asked so far, and the answers. Each call checks
the answers against the template, then appends the next questions: the enabled, unasked items of the
next section, stopping before any item whose ``enableWhen`` depends on a question not answered yet.
Items the answers disable are never asked, so the contained Questionnaire needs no ``enableWhen``
(which DTR 2.0.1's adaptive profile forbids). When nothing is left, the response is ``completed``
and a closing display item tells the clinician whether Precert's criteria are met.

Nothing is stored: the answers are used only to answer the call (DTR security requirement 49).
"""

from __future__ import annotations

import copy
import html
from datetime import date

from questionnaires.catalog import (
    EXT_ADAPTIVE, Catalog, Template, get_catalog, response_items,
)
from questionnaires.checker import check_response, collect_answers, enabled_items
from questionnaires.criteria import assess_answers
from server.dtr.common import EXT_QR_CONTEXT, EXT_QR_COVERAGE, V22, parse_parameters, requested_version
from server.fhir.errors import FHIRError, bad_request
from server.fhir.operations import OperationCall, operation
from server.fhir.responses import base_url, fhir_response

CONTAINED_ID = "adaptive"
DONE_LINK_ID = "precert-complete"
SDC_OD = "http://hl7.org/fhir/uv/sdc/OperationDefinition/Questionnaire-next-question"
_STRIP = ("enableWhen", "enableBehavior", "item")
EXT_COVERAGE_INFORMATION = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information"

DEFINITION = {
    "resourceType": "OperationDefinition",
    "id": "Questionnaire-next-question",
    "url": SDC_OD,
    "version": "3.0.0",
    "name": "NextQuestion",
    "title": "Next Question (adaptive DTR forms)",
    "status": "active",
    "kind": "operation",
    "code": "next-question",
    "resource": ["Questionnaire"],
    "system": False,
    "type": True,
    "instance": False,
    "inputProfile": "http://hl7.org/fhir/uv/sdc/StructureDefinition/parameters-questionnaire-next-question-in",
    "outputProfile": "http://hl7.org/fhir/uv/sdc/StructureDefinition/parameters-questionnaire-next-question-out",
    "parameter": [
        {"name": "questionnaire-response", "use": "in", "min": 1, "max": "1", "type": "QuestionnaireResponse",
         "documentation": "The adaptive QuestionnaireResponse so far (a bare QuestionnaireResponse body is accepted too)"},
        {"name": "return", "use": "out", "min": 1, "max": "1", "type": "QuestionnaireResponse",
         "documentation": "The QuestionnaireResponse with the next questions added to its contained Questionnaire; returned as the bare resource"},
    ],
}


def _leaves(template: Template) -> list[tuple[dict, dict | None]]:
    """(question item, its top-level group) in document order."""
    out = []

    def walk(items, group):
        for item in items:
            if item["type"] == "group":
                walk(item.get("item", []), group or item)
            else:
                out.append((item, group))

    walk(template.questionnaire["item"], None)
    return out


def _asked_copy(item: dict) -> dict:
    return {k: copy.deepcopy(v) for k, v in item.items() if k not in _STRIP}


def _heading(group: dict) -> dict:
    return {"linkId": group["linkId"], "text": group["text"], "type": "display"}


def next_batch(template: Template, answers: dict[str, list[dict]], asked: list[str]) -> tuple[list[dict], bool]:
    """The items to append after ``asked`` (the linkIds of the questions and section headings already
    shown), a section heading first when its section starts here, and whether the form is done."""
    asked_set = set(asked)
    enabled = enabled_items(template.questionnaire, answers)
    state: dict[str, str] = {}  # linkId -> asked | new | skipped | pending
    batch: list[dict] = []
    batch_group = None
    blocked = False
    for item, group in _leaves(template):
        link_id = item["linkId"]
        if link_id in asked_set:
            state[link_id] = "asked"
            continue
        if blocked:
            state[link_id] = "pending"
            continue
        deps = [c.get("question") for c in item.get("enableWhen", [])]
        if any(state.get(d) in (None, "new", "pending") for d in deps):
            state[link_id] = "pending"
            blocked = True
            continue
        if not enabled.get(link_id, True):
            state[link_id] = "skipped"
            continue
        if batch and group is not batch_group:
            state[link_id] = "pending"
            blocked = True
            continue
        if not batch and group is not None and group["linkId"] not in asked_set:
            batch.append(_heading(group))
        batch_group = group
        batch.append(_asked_copy(item))
        state[link_id] = "new"
    done = not any(s in ("new", "pending") for s in state.values())
    return batch, done


def contained_questionnaire(template: Template, items: list[dict], version: str, base: str) -> dict:
    search = template.adaptive_questionnaire or template.questionnaire
    ext = [e for e in search["extension"] if e["url"] != EXT_ADAPTIVE]
    adaptive = {"url": EXT_ADAPTIVE, "valueUrl": base} if version == V22 else {"url": EXT_ADAPTIVE, "valueBoolean": True}
    lines = "".join(f"<li>{html.escape(i['text'])}</li>" for i in items)
    return {
        "resourceType": "Questionnaire",
        "id": CONTAINED_ID,
        "meta": {"profile": ["http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaire-adapt"]},
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(template.title)}</p><ul>{lines}</ul></div>'},
        "extension": [adaptive, *ext],
        "name": search["name"],
        "title": search["title"],
        "status": "active",
        "subjectType": ["Patient"],
        "derivedFrom": [f"{search['url']}|{search['version']}"],
        "item": items,
    }


def first_step(template: Template, prefill: dict, version: str, base: str, origin: dict) -> tuple[dict, list[dict]]:
    """The contained Questionnaire and QuestionnaireResponse items for a new adaptive session."""
    answers = {k: [{"valueString": str(v)}] for k, v in prefill.items()}
    items, _ = next_batch(template, answers, [])
    questions = [i for i in items if i["type"] != "display"]
    qr_items = response_items(template, prefill, get_catalog(), questions, origin)
    return contained_questionnaire(template, items, version, base), qr_items


def _template_of(qr: dict, catalog: Catalog) -> tuple[Template, dict]:
    ref = qr.get("questionnaire")
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise bad_request("an adaptive QuestionnaireResponse must reference its contained Questionnaire ('#id')", "QuestionnaireResponse.questionnaire")
    contained = qr.get("contained")
    if not isinstance(contained, list):
        raise bad_request("the QuestionnaireResponse has no contained Questionnaire", "QuestionnaireResponse.contained")
    form = next((c for c in contained if isinstance(c, dict) and c.get("resourceType") == "Questionnaire" and c.get("id") == ref[1:]), None)
    if form is None:
        raise bad_request(f"the contained Questionnaire '{ref[:64]}' is missing", "QuestionnaireResponse.contained")
    derived = form.get("derivedFrom")
    for canonical in derived if isinstance(derived, list) else []:
        template = catalog.template_for(canonical) if isinstance(canonical, str) else None
        if template is not None:
            return template, form
    shown = ", ".join(str(d)[:120] for d in derived) if isinstance(derived, list) and derived else "nothing"
    raise FHIRError.single(422, "not-found", f"the adaptive Questionnaire derives from {shown}, which is not a Precert form")


def _coverage_reference(qr: dict) -> str | None:
    for ext in qr.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") in (EXT_QR_COVERAGE, EXT_QR_CONTEXT):
            ref = (ext.get("valueReference") or {}).get("reference")
            if isinstance(ref, str) and ref.startswith("Coverage/"):
                return ref
    return None


def coverage_information(qr: dict, met: bool | None, unmet: list[str]) -> dict | None:
    """The CRD coverage-information a completed DTR 2.2 adaptive response carries (DTR spec-33), or
    None when the response names no Coverage (the extension requires one).

    Completing the form does not authorize anything: prior authorization is still requested through
    PAS, so ``pa-needed`` stays ``auth-needed`` and no ``satisfied-pa-id`` is issued (spec-41/42).
    When the answers miss the criteria, coverage is ``conditional`` on what the reason says."""
    coverage = _coverage_reference(qr)
    if coverage is None:
        return None
    if met is False:
        covered, reason = "conditional", "Criteria not met: " + "; ".join(unmet) + "."
    else:
        covered, reason = "covered", "Documentation complete; request prior authorization with these answers."
    ext = [
        {"url": "coverage", "valueReference": {"reference": coverage}},
        {"url": "covered", "valueCode": covered},
        {"url": "pa-needed", "valueCode": "auth-needed"},
    ]
    if covered == "conditional":
        ext.append({"url": "info-needed", "valueCode": "OTH"})
    ext.append({"url": "reason", "valueCodeableConcept": {"text": reason[:1000]}})
    ext.append({"url": "date", "valueDate": date.today().isoformat()})
    # The same id on every completion of this response: a new completion replaces the last (spec-45/47).
    ext.append({"url": "coverage-assertion-id", "valueString": f"dtr-{qr.get('id') or 'adaptive'}"[:64]})
    return {"url": EXT_COVERAGE_INFORMATION, "extension": ext}


def next_question(qr: dict, version: str, base: str) -> dict:
    """One $next-question step. Raises FHIRError (400) when the answers are not acceptable."""
    catalog = get_catalog()
    template, form = _template_of(qr, catalog)
    items = form.get("item") or []
    if not isinstance(items, list):
        raise bad_request("the contained Questionnaire's item must be an array", "Questionnaire.item")
    # asked: every linkId already in the contained form, section headings included, so that a section
    # continued in a later step does not get its heading again (que-2: linkIds are unique).
    asked: list[str] = []
    shown: list[dict] = []
    for item in items:
        link_id = item.get("linkId") if isinstance(item, dict) else None
        if not isinstance(link_id, str):
            raise bad_request("every item of the contained Questionnaire needs a linkId", "Questionnaire.item.linkId")
        if link_id == DONE_LINK_ID or link_id in asked:
            continue
        definition = template.items.get(link_id)
        if definition is None:
            raise bad_request(f"the contained Questionnaire asks '{link_id[:64]}', which {template.title} does not have", "Questionnaire.item")
        asked.append(link_id)
        shown.append(_heading(definition) if definition["type"] == "group" else _asked_copy(definition))
    # Check the answers against the questions as Precert defines them, not the client's copy.
    problems = [i for i in check_response(qr, {"item": shown}) if i["severity"] == "error"]
    if problems:
        raise FHIRError(400, problems)
    answers = collect_answers(qr)
    batch, done = next_batch(template, answers, asked)
    out = {k: v for k, v in qr.items() if k not in ("contained", "questionnaire", "status", "item")}
    others = [c for c in qr.get("contained") or [] if not (isinstance(c, dict) and c.get("id") == form.get("id"))]
    new_items = shown + batch
    if done:
        assessment = assess_answers(template, answers)
        if assessment.met:
            summary = "All questions are answered. The answers meet Precert's coverage criteria for this request."
        elif assessment.met is False:
            summary = "All questions are answered. Criteria not met: " + "; ".join(assessment.unmet) + "."
        else:
            summary = "All questions are answered."
        new_items.append({"linkId": DONE_LINK_ID, "text": summary, "type": "display"})
        if version == V22:
            extensions = [e for e in out.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == EXT_COVERAGE_INFORMATION)]
            info = coverage_information(qr, assessment.met, assessment.unmet)
            out["extension"] = extensions + ([info] if info else [])
    contained_form = contained_questionnaire(template, new_items, version, base)
    return {
        "resourceType": "QuestionnaireResponse",
        **{k: v for k, v in out.items() if k != "resourceType"},
        "contained": [contained_form, *others],
        "questionnaire": f"#{CONTAINED_ID}",
        "status": "completed" if done else "in-progress",
        **({"item": qr["item"]} if isinstance(qr.get("item"), list) and qr["item"] else {}),
    }


def _version_of(qr: dict, query) -> str:
    contained = qr.get("contained") if isinstance(qr, dict) else None
    for c in contained if isinstance(contained, list) else []:
        if isinstance(c, dict) and c.get("resourceType") == "Questionnaire":
            extensions = c.get("extension")
            for ext in extensions if isinstance(extensions, list) else []:
                if isinstance(ext, dict) and ext.get("url") == EXT_ADAPTIVE and "valueUrl" in ext:
                    return V22
    return requested_version(None, query)


async def _next_question(call: OperationCall):
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        params = parse_parameters(body, "next-question")
        found = [p for p in params.params if p.name in ("questionnaire-response", "questionnaireResponse", "in")]
        if len(found) != 1 or not found[0].resource:
            raise bad_request("$next-question takes exactly one 'questionnaire-response' parameter holding a QuestionnaireResponse", "Parameters.parameter")
        body = found[0].resource
    if not isinstance(body, dict) or body.get("resourceType") != "QuestionnaireResponse":
        rtype = body.get("resourceType") if isinstance(body, dict) else None
        raise bad_request(f"$next-question takes a QuestionnaireResponse (or Parameters holding one), not {str(rtype)[:40] if rtype else 'this body'}")
    result = next_question(body, _version_of(body, call.query), base_url(call.request))
    return fhir_response(result)


operation("next-question", ("Questionnaire", "QuestionnaireResponse"), DEFINITION, scopes=(("Questionnaire", "r"),))(_next_question)
# DTR 2.0.1 prose: with questionnaireAdaptive = true the client posts to [base]/$next-question.
operation("next-question", (), DEFINITION, scopes=(("Questionnaire", "r"),))(_next_question)
