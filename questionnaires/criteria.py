"""The payer's decision criteria over a completed DTR QuestionnaireResponse.

Each template's ``criteria.yaml`` lists criteria in plain language with the public source they come
from, and a rule over the answers. Rules are small boolean trees::

    {all: [...]} | {any: [...]} | {not: rule}
    {item: linkId, eq|ne|lt|le|gt|ge: value}     # any answer compares true (Codings by code)
    {item: linkId, in: [values]}                  # any answer is one of the values
    {item: linkId, answered: true}
    {item: linkId, within_days: N}                # a date answer in the N days up to today

A criterion may carry ``applies`` (a rule): when that does not hold, the criterion does not count.
Rules use three-valued logic: an unanswered item is unknown, so an incomplete response yields
``met = None`` rather than a wrong "no". PAS decides automatically only on ``met is True``/``False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from questionnaires.catalog import Catalog, Template, canonical_split, get_catalog
from questionnaires.checker import collect_answers, enabled_items, missing_required, plain

_OPS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
}


@dataclass
class Assessment:
    questionnaire: str            # canonical the QR answers
    category: str | None
    complete: bool                # every enabled required item answered
    met: bool | None              # payer criteria met; None when incomplete or unknown questionnaire
    missing: list[str] = field(default_factory=list)   # "linkId: text" of required, enabled, unanswered items
    unmet: list[str] = field(default_factory=list)     # plain-language criteria not met
    details: list[dict] = field(default_factory=list)  # {"criterion", "text", "met", "source"}


def _cmp(op: str, actual, expected) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return _OPS[op](actual, expected) if op in ("eq", "ne") else False
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return _OPS[op](actual, expected)
    return _OPS[op](str(actual), str(expected)) if op in ("eq", "ne") else False


def evaluate_rule(rule: dict, values: dict[str, list], today: date | None = None) -> bool | None:
    """True / False / None (unknown: an item the rule needs is unanswered)."""
    if "all" in rule:
        results = [evaluate_rule(r, values, today) for r in rule["all"]]
        return False if False in results else (None if None in results else True)
    if "any" in rule:
        results = [evaluate_rule(r, values, today) for r in rule["any"]]
        return True if True in results else (None if None in results else False)
    if "not" in rule:
        inner = evaluate_rule(rule["not"], values, today)
        return None if inner is None else not inner
    answers = values.get(rule["item"], [])
    if "answered" in rule:
        return bool(answers) == bool(rule["answered"])
    if not answers:
        return None
    if "in" in rule:
        allowed = {str(v) for v in rule["in"]}
        return any(str(a) in allowed for a in answers)
    if "within_days" in rule:
        now = today or date.today()
        earliest = now - timedelta(days=int(rule["within_days"]))
        for a in answers:
            try:
                d = date.fromisoformat(str(a)[:10])
            except ValueError:
                continue
            if earliest <= d <= now + timedelta(days=1):
                return True
        return False
    for op in _OPS:
        if op in rule:
            return any(_cmp(op, a, rule[op]) for a in answers)
    raise ValueError(f"criterion rule has no operator: {rule!r}")


def _template_for(qr: dict, catalog: Catalog) -> tuple[str, Template | None]:
    canonical = qr.get("questionnaire") if isinstance(qr.get("questionnaire"), str) else ""
    if canonical.startswith("#"):
        contained = next(
            (r for r in qr.get("contained") or [] if isinstance(r, dict) and r.get("id") == canonical[1:] and r.get("resourceType") == "Questionnaire"),
            None,
        )
        for derived in (contained or {}).get("derivedFrom") or []:
            template = catalog.template_for(derived) if isinstance(derived, str) else None
            if template is not None:
                return derived, template
        return canonical, None
    return canonical, catalog.template_for(canonical) if canonical else None


def questionnaire_of(qr: dict) -> str | None:
    """The Precert form (standard canonical, ``url|version``) a QuestionnaireResponse answers, for
    standard responses and adaptive ones (``#contained`` derived from a Precert form) alike; None
    when it answers something else. PAS uses it to match attached responses to the form a rule
    asks for."""
    if not isinstance(qr, dict):
        return None
    _canonical, template = _template_for(qr, get_catalog())
    return template.canonical if template else None


def assess_answers(template: Template, answers: dict[str, list[dict]], canonical: str | None = None, today: date | None = None) -> Assessment:
    questionnaire = template.questionnaire
    missing = [f"{d['linkId']}: {d.get('text', '')}" for d in missing_required(questionnaire, answers)]
    enabled = enabled_items(questionnaire, answers)
    values = {link_id: [plain(a) for a in ans] for link_id, ans in answers.items() if enabled.get(link_id, False)}
    complete = not missing
    details, unmet = [], []
    for crit in template.criteria:
        applies = evaluate_rule(crit["applies"], values, today) if crit.get("applies") else True
        if applies is not True:  # condition false, or its item unanswered / not enabled
            details.append({"criterion": crit["id"], "text": crit["text"], "met": None, "source": crit.get("source"), "applies": False})
            continue
        result = evaluate_rule(crit["rule"], values, today)
        if complete and result is None:
            result = False  # complete but the deciding answer is absent: not documented
        details.append({"criterion": crit["id"], "text": crit["text"], "met": result, "source": crit.get("source"), "applies": True})
        if result is False:
            unmet.append(crit["text"])
    met = None if not complete else not unmet
    return Assessment(canonical or template.canonical, template.category, complete, met, missing, unmet, details)


def assess(qr: dict) -> Assessment:
    """Assess a QuestionnaireResponse to a Precert template (standard or adaptive)."""
    catalog = get_catalog()
    if not isinstance(qr, dict):
        return Assessment("", None, False, None)
    canonical, template = _template_for(qr, catalog)
    if template is None:
        return Assessment(canonical, None, False, None, [], [f"{canonical[:200] or 'the response'} is not a Precert documentation template"])
    return assess_answers(template, collect_answers(qr), canonical_split(canonical)[0] and canonical)
