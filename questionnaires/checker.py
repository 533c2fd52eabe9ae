"""Checking a QuestionnaireResponse against its Questionnaire.

:func:`check_response` answers "is this a well-formed, complete set of answers to this form?":
every item it answers exists, each answer has the item's type and is one of its options, an item that
does not repeat has one answer, values respect min/max, and every required item that is enabled
(``enableWhen`` evaluated over the answers, as R4 defines it) is answered. PAS calls it on the
QuestionnaireResponses attached to a prior-authorization request; ``QuestionnaireResponse/$validate``
exposes it to DTR clients.

The enableWhen and answer helpers here are shared with :mod:`questionnaires.criteria`.
"""

from __future__ import annotations

from decimal import Decimal

from questionnaires.catalog import EXT_MAX, EXT_MIN, canonical_split, expansion_contains, get_catalog

# Which answer value[x] each item type accepts.
ANSWER_TYPES: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal", "valueInteger"),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime", "valueDate"),
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}
_NO_ANSWERS = ("group", "display")
MAX_ISSUES = 200


def _expr(link_id: str) -> str:
    return f"QuestionnaireResponse.repeat(item).where(linkId='{str(link_id)[:64]}')"


def _issue(severity: str, code: str, diagnostics: str, link_id: str | None = None) -> dict:
    out = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if link_id is not None:
        out["expression"] = [_expr(link_id)]
    return out


def value_of(answer: dict) -> tuple[str | None, object]:
    """(value[x] key, value) of one answer."""
    for key, value in answer.items():
        if key.startswith("value"):
            return key, value
    return None, None


def plain(answer: dict):
    """An answer reduced to a comparable Python value: a Coding to its code, a Quantity to its
    number, everything else as is."""
    key, value = value_of(answer)
    if key == "valueCoding" and isinstance(value, dict):
        return value.get("code")
    if key == "valueQuantity" and isinstance(value, dict):
        return value.get("value")
    if key == "valueReference" and isinstance(value, dict):
        return value.get("reference")
    return value


def collect_answers(qr: dict) -> dict[str, list[dict]]:
    """linkId -> answers, over every level of the response (items nested in items or answers)."""
    out: dict[str, list[dict]] = {}

    def walk(items) -> None:
        if not isinstance(items, list):
            return
        for item in items:
            if not isinstance(item, dict):
                continue
            link_id = item.get("linkId")
            answers = item.get("answer")
            if isinstance(link_id, str) and isinstance(answers, list):
                out.setdefault(link_id, []).extend(a for a in answers if isinstance(a, dict))
            walk(item.get("item"))
            for a in answers if isinstance(answers, list) else []:
                if isinstance(a, dict):
                    walk(a.get("item"))

    walk(qr.get("item"))
    return out


def _num(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return value
    return None


def _compare(op: str, actual, expected) -> bool:
    if isinstance(expected, dict) and "code" in expected:  # Coding
        if not isinstance(actual, dict):
            return False if op == "=" else op == "!="
        same = actual.get("code") == expected.get("code") and (
            not expected.get("system") or not actual.get("system") or actual.get("system") == expected.get("system")
        )
        return same if op == "=" else (not same if op == "!=" else False)
    if op == "=":
        return actual == expected
    if op == "!=":
        return actual != expected
    a, e = _num(actual), _num(expected)
    if a is None or e is None:
        if isinstance(actual, str) and isinstance(expected, str):  # dates compare as ISO strings
            a, e = actual, expected
        else:
            return False
    return {">": a > e, "<": a < e, ">=": a >= e, "<=": a <= e}.get(op, False)


def _condition_met(cond: dict, answers: list[dict]) -> bool:
    op = cond.get("operator")
    expected_key = next((k for k in cond if k.startswith("answer")), None)
    expected = cond.get(expected_key) if expected_key else None
    if op == "exists":
        return bool(answers) == bool(expected)
    if not answers:
        return op == "!="
    for answer in answers:
        _key, actual = value_of(answer)
        if _compare(op, actual, expected):
            return True
    return False


def enabled_items(questionnaire: dict, answers: dict[str, list[dict]]) -> dict[str, bool]:
    """linkId -> enabled, in document order: an item is disabled when its parent is, or when its
    enableWhen conditions (combined by enableBehavior) do not hold over the enabled answers."""
    enabled: dict[str, bool] = {}

    def effective(link_id: str) -> list[dict]:
        return answers.get(link_id, []) if enabled.get(link_id, True) else []

    def walk(items: list, parent_enabled: bool) -> None:
        for item in items or []:
            on = parent_enabled
            conds = item.get("enableWhen") or []
            if on and conds:
                results = [_condition_met(c, effective(c.get("question", ""))) for c in conds]
                on = any(results) if item.get("enableBehavior") == "any" else all(results)
            enabled[item["linkId"]] = on
            walk(item.get("item", []), on)

    walk(questionnaire.get("item", []), True)
    return enabled


def _definitions(questionnaire: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def walk(items) -> None:
        for item in items or []:
            out[item["linkId"]] = item
            walk(item.get("item"))

    walk(questionnaire.get("item"))
    return out


def _ext(item: dict, url: str):
    for ext in item.get("extension", []):
        if ext.get("url") == url:
            return value_of(ext)[1]
    return None


def _option_ok(item: dict, key: str, value) -> tuple[bool, str | None]:
    """(acceptable, reason) for a choice answer."""
    if key == "valueString" and item["type"] == "open-choice":
        return True, None
    if not isinstance(value, dict) or not value.get("code"):
        return False, "a choice answer must be a Coding with a code"
    options = [o["valueCoding"] for o in item.get("answerOption", []) if "valueCoding" in o]
    if options:
        ok = any(o["code"] == value.get("code") and (not value.get("system") or o.get("system") == value.get("system")) for o in options)
        return ok, None if ok else f"'{str(value.get('code'))[:64]}' is not one of the item's answer options"
    vs_ref = item.get("answerValueSet")
    if vs_ref:
        vs = get_catalog().valueset(vs_ref)
        if vs is None:
            return True, None  # a value set Precert does not hold: cannot check here
        ok = any(c["code"] == value.get("code") and (not value.get("system") or c["system"] == value.get("system")) for c in expansion_contains(vs))
        return ok, None if ok else f"'{str(value.get('code'))[:64]}' is not in value set {canonical_split(vs_ref)[0]}"
    return True, None


def check_response(qr: dict, questionnaire: dict) -> list[dict]:
    """OperationOutcome issues for ``qr`` against ``questionnaire``; no error issues means the
    response is complete and well-formed. Never raises on malformed input."""
    issues: list[dict] = []
    if not isinstance(qr, dict) or qr.get("resourceType") != "QuestionnaireResponse":
        return [_issue("error", "invalid", "expected a QuestionnaireResponse")]
    if not isinstance(questionnaire, dict) or not isinstance(questionnaire.get("item", []), list):
        return [_issue("error", "invalid", "the Questionnaire has no usable items")]
    defs = _definitions(questionnaire)
    answers = collect_answers(qr)
    enabled = enabled_items(questionnaire, answers)

    def walk(items, path: str) -> None:
        if items is None:
            return
        if not isinstance(items, list):
            issues.append(_issue("error", "structure", f"{path}.item must be an array"))
            return
        for item in items:
            if len(issues) >= MAX_ISSUES:
                return
            if not isinstance(item, dict) or not isinstance(item.get("linkId"), str):
                issues.append(_issue("error", "required", f"every item in {path} needs a linkId"))
                continue
            link_id = item["linkId"]
            definition = defs.get(link_id)
            if definition is None:
                issues.append(_issue("error", "invalid", f"item '{link_id[:64]}' is not in the Questionnaire", link_id))
                continue
            item_answers = item.get("answer")
            if item_answers is not None and not isinstance(item_answers, list):
                issues.append(_issue("error", "structure", f"answer of item '{link_id}' must be an array", link_id))
                item_answers = None
            item_answers = [a for a in item_answers or [] if isinstance(a, dict)]
            itype = definition.get("type")
            if item_answers and itype in _NO_ANSWERS:
                issues.append(_issue("error", "structure", f"item '{link_id}' is a {itype} and cannot have answers", link_id))
            if item_answers and not enabled.get(link_id, True):
                issues.append(_issue("warning", "business-rule", f"item '{link_id}' is answered but not enabled by the other answers; its answer is ignored", link_id))
            if len(item_answers) > 1 and not definition.get("repeats"):
                issues.append(_issue("error", "structure", f"item '{link_id}' does not repeat but has {len(item_answers)} answers", link_id))
            allowed = ANSWER_TYPES.get(itype, ())
            low, high = _ext(definition, EXT_MIN), _ext(definition, EXT_MAX)
            for answer in item_answers:
                key, value = value_of(answer)
                if key is None:
                    issues.append(_issue("error", "required", f"an answer of item '{link_id}' has no value", link_id))
                    continue
                if allowed and key not in allowed:
                    issues.append(_issue("error", "value", f"item '{link_id}' is {itype}; {key} is not a valid answer ({' or '.join(allowed)})", link_id))
                    continue
                if key in ("valueDecimal", "valueInteger") and _num(value) is None:
                    issues.append(_issue("error", "value", f"item '{link_id}' answer is not a number", link_id))
                    continue
                if key == "valueBoolean" and not isinstance(value, bool):
                    issues.append(_issue("error", "value", f"item '{link_id}' answer is not true or false", link_id))
                    continue
                if itype in ("choice", "open-choice"):
                    ok, reason = _option_ok(definition, key, value)
                    if not ok:
                        issues.append(_issue("error", "code-invalid", f"item '{link_id}': {reason}", link_id))
                for bound, op, word in ((low, "<", "below the minimum"), (high, ">", "above the maximum")):
                    if bound is not None and _num(value) is not None and _num(bound) is not None and _compare(op, value, bound):
                        issues.append(_issue("error", "value", f"item '{link_id}' answer {value} is {word} {bound}", link_id))
                walk(answer.get("item"), f"{path}.answer")
            walk(item.get("item"), f"{path}.item")

    walk(qr.get("item"), "QuestionnaireResponse")
    for link_id, definition in defs.items():
        if definition.get("required") and enabled.get(link_id) and definition.get("type") not in _NO_ANSWERS and not answers.get(link_id):
            issues.append(_issue("error", "required", f"required item '{link_id}' ({definition.get('text', '')[:120]}) is not answered", link_id))
    return issues[:MAX_ISSUES]


def missing_required(questionnaire: dict, answers: dict[str, list[dict]]) -> list[dict]:
    """The required, enabled, unanswered question items (their definitions), in form order."""
    enabled = enabled_items(questionnaire, answers)
    return [
        d for link_id, d in _definitions(questionnaire).items()
        if d.get("required") and enabled.get(link_id) and d.get("type") not in _NO_ANSWERS and not answers.get(link_id)
    ]
