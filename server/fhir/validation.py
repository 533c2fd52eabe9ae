"""Validation of inbound FHIR R4 resources.

``fhir.resources.R4B`` checks structure and datatypes. It does not refuse an explicit ``null`` for a
required element, nor check codes against required bindings, so both are added here. The original
JSON is what Precert keeps; the model is only used to judge it.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from server.fhir.errors import FHIRError, issue

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


@lru_cache(maxsize=None)
def model_class(resource_type: str) -> type[BaseModel] | None:
    if not _TYPE_RE.match(resource_type or ""):
        return None
    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None
    # Datatypes are models too; only resources carry a resourceType.
    if "resourceType" not in getattr(cls, "model_fields", {}) and resource_type != getattr(cls, "__resource_type__", None):
        return cls if _is_resource(cls) else None
    return cls


def _is_resource(cls: type) -> bool:
    names = {c.__name__ for c in cls.__mro__}
    return "Resource" in names or "DomainResource" in names


def is_resource_type(name: str) -> bool:
    return model_class(name) is not None


def _loc_to_expression(root: str, loc: tuple) -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before", "function-plain", "function-wrap"):
            continue
        else:
            text = str(part)
            if text.startswith(("function-", "lax-or-strict", "json-or-python")) or "[" in text:
                continue
            out += f".{text}"
    return out


def _pydantic_issues(root: str, exc: ValidationError) -> list[dict]:
    issues = []
    seen = set()
    for err in exc.errors(include_url=False):
        expr = _loc_to_expression(root, err.get("loc", ()))
        kind = err.get("type", "")
        if kind == "missing":
            code, msg = "required", f"{expr} is required but missing"
        elif kind == "extra_forbidden":
            code, msg = "structure", f"{expr} is not an element of {root}"
        else:
            code, msg = "value", f"{expr}: {err.get('msg', 'invalid value')}"
        key = (code, expr)
        if key in seen:
            continue
        seen.add(key)
        issues.append(issue(code, msg, expr))
    return issues


def _null_issues(value: Any, path: str, out: list[dict], depth: int = 0) -> None:
    """FHIR JSON never carries ``null`` except as a placeholder inside primitive arrays."""
    if depth > 64:
        out.append(issue("structure", f"{path} is nested too deeply", path))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}"
            if item is None:
                out.append(issue("required", f"{child} is null; omit the element instead", child))
            elif isinstance(item, list):
                has_shadow = f"_{key}" in value or key.startswith("_")
                if not item:
                    out.append(issue("structure", f"{child} is an empty array; omit the element instead", child))
                for i, element in enumerate(item):
                    if element is None:
                        if not has_shadow:
                            out.append(issue("required", f"{child}[{i}] is null", f"{child}[{i}]"))
                    else:
                        _null_issues(element, f"{child}[{i}]", out, depth + 1)
            elif isinstance(item, dict):
                _null_issues(item, child, out, depth + 1)
    elif isinstance(value, list):
        for i, element in enumerate(value):
            _null_issues(element, f"{path}[{i}]", out, depth + 1)


# The models shorten long required-binding lists with a trailing "+". The R4 value sets of the
# elements Precert relies on are completed here.
R4_CODES: dict[tuple[str, str], list[str]] = {
    ("QuestionnaireItem", "type"): [
        "group", "display", "question", "boolean", "decimal", "integer", "date", "dateTime", "time",
        "string", "text", "url", "choice", "open-choice", "attachment", "reference", "quantity",
    ],
    ("Task", "status"): [
        "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
        "on-hold", "failed", "completed", "entered-in-error",
    ],
    ("Task", "intent"): [
        "unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
        "instance-order", "option",
    ],
    ("ServiceRequest", "intent"): [
        "proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
        "instance-order", "option",
    ],
    ("DeviceRequest", "intent"): [
        "proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
        "instance-order", "option",
    ],
    ("MedicationRequest", "intent"): [
        "proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option",
    ],
    ("Bundle", "type"): [
        "document", "message", "transaction", "transaction-response", "batch", "batch-response",
        "history", "searchset", "collection",
    ],
}


@lru_cache(maxsize=None)
def _field_rules(cls: type) -> tuple[dict, tuple]:
    """Per model class, computed once: {field: (json name, allowed codes or None)} for every
    field, and the fields whose presence FHIR requires."""
    rules: dict[str, tuple[str, tuple | None]] = {}
    required: list[tuple[str, str]] = []
    for name, field in cls.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        json_name = field.alias or name
        allowed = extra.get("enum_values")
        if allowed and "+" in allowed:
            allowed = R4_CODES.get((cls.__name__, name))
        rules[name] = (json_name, tuple(allowed) if allowed else None)
        if extra.get("element_required"):
            required.append((name, json_name))
    return rules, tuple(required)


def _binding_issues(model: BaseModel, path: str, out: list[dict]) -> None:
    """Required elements present and codes of required bindings in their value set. Only the
    elements a resource actually carries are visited, so the cost follows the size of the input."""
    rules, required = _field_rules(type(model))
    for name, json_name in required:
        if getattr(model, name, None) is None:
            child = f"{path}.{json_name}"
            out.append(issue("required", f"{child} is required but missing", child))
    for name in model.model_fields_set:
        value = getattr(model, name, None)
        if value is None or name not in rules:
            continue
        json_name, allowed = rules[name]
        child = f"{path}.{json_name}"
        if allowed:
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v not in allowed:
                    shown = ", ".join(allowed[:12])
                    out.append(issue("code-invalid", f"{child} has code '{v[:64]}', which is not one of: {shown}", child))
        if isinstance(value, BaseModel):
            _binding_issues(value, child, out)
        elif isinstance(value, list):
            for i, element in enumerate(value):
                if isinstance(element, BaseModel):
                    _binding_issues(element, f"{child}[{i}]", out)


def _unknown_type(exc: KeyError) -> str:
    name = str(exc.args[0]) if exc.args else ""
    name = name.split(".", 1)[-1]
    if name.endswith("Type"):
        name = name[:-4]
    return repr(name[:64]) if name else "(unnamed)"


def validate_resource(resource: Any, expected_type: str | None = None, *, status: int = 400) -> BaseModel:
    """Validate one resource; raise FHIRError listing every problem found."""
    if not isinstance(resource, dict):
        raise FHIRError.single(400, "structure", "the body must be a JSON object holding a FHIR resource")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise FHIRError.single(400, "required", "resourceType is missing", "resourceType")
    if expected_type and rtype != expected_type:
        raise FHIRError.single(
            400,
            "invalid",
            f"resourceType '{rtype[:64]}' does not match the type '{expected_type}' in the URL",
            "resourceType",
        )
    cls = model_class(rtype)
    if cls is None:
        raise FHIRError.single(400, "not-supported", f"'{rtype[:64]}' is not a FHIR R4 resource type", "resourceType")
    issues: list[dict] = []
    _null_issues(resource, rtype, issues)
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        issues.append(issue("value", f"{rtype}.id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'", f"{rtype}.id"))
    if issues:
        raise FHIRError(status, issues)
    try:
        model = cls.model_validate(resource)
    except ValidationError as exc:
        raise FHIRError(status, _pydantic_issues(rtype, exc)) from None
    except KeyError as exc:
        # The models look nested resources (Bundle.entry.resource, contained) up by their
        # resourceType and raise KeyError for a name they do not know.
        raise FHIRError.single(status, "not-supported", f"{rtype} holds a nested resource of unknown type {_unknown_type(exc)}") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # a few datatypes raise outside pydantic's machinery
        raise FHIRError.single(status, "value", f"{rtype}: {str(exc)[:300]}") from None
    _binding_issues(model, rtype, issues)
    if issues:
        raise FHIRError(status, issues)
    return model
