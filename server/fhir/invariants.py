"""The base invariants that recur on every resource, Bundle, Reference and Quantity, and the costliest
profile invariant of every PAS request (``ImmediateLevelOfCare``), as Python checks.

Evaluated by fhirpathpy they were over half of the validator's CPU: ``dom-2`` to ``dom-6`` run on
every resource and every contained or Bundle-entry resource, the ``bdl-*`` set on every Bundle.
:data:`COMPILED` maps the *exact expression text* the R4 snapshots carry to a predicate, so a profile
that reuses a key with another expression still goes through FHIRPath. The datatype ones (``ref-1``,
``per-1``, ``qty-3``, ``sqty-1``) and those on ``Bundle.entry`` sit below a resource's root, where the
validator evaluates no invariant yet (fhirpathpy cannot compile an expression with an element path);
they are here, tested, for when it does.

A predicate answers ``True`` when FHIRPath would not report the invariant (its result is ``true`` or
empty), ``False`` when it would (``false``), and ``None`` when the input is unusual enough (a primitive
carried only as ``_field``, a ``null``, a value of the wrong JSON type, contained resources ``dom-3``
cannot settle by their references) that only FHIRPath itself can say: the caller then evaluates the
expression. ``tests/test_validator_invariants.py`` proves each agrees with fhirpathpy.
"""

from __future__ import annotations

from typing import Any, Callable

Predicate = Callable[[Any, dict, dict], "bool | None"]


class _Unsure(Exception):
    """Raised inside a predicate for input only FHIRPath can judge."""


_ABSENT = object()


def _field(element: Any, name: str, kinds: tuple[type, ...]) -> Any:
    """``element[name]`` when it is one of ``kinds``; :data:`_ABSENT` when neither it nor its ``_name``
    extension part is there; :class:`_Unsure` for anything else (``null``, ``_name``, another type)."""
    if not isinstance(element, dict):
        raise _Unsure
    if "_" + name in element:
        raise _Unsure
    if name not in element:
        return _ABSENT
    value = element[name]
    if isinstance(value, bool) and bool not in kinds:
        raise _Unsure
    if not isinstance(value, kinds):
        raise _Unsure
    return value


def _dicts(element: Any, name: str) -> list[dict]:
    """A repeating complex element as a list of objects ([] when absent)."""
    value = _field(element, name, (list,))
    if value is _ABSENT:
        return []
    if not value or not all(isinstance(v, dict) for v in value):
        raise _Unsure
    return value


def _object(element: Any, name: str) -> dict | None:
    """A single complex element (None when absent)."""
    value = _field(element, name, (dict,))
    if value is _ABSENT:
        return None
    if not value:
        raise _Unsure
    return value


def _text(element: Any, name: str) -> str | None:
    value = _field(element, name, (str,))
    return None if value is _ABSENT else value


def _safe(fn: Callable[[Any, dict, dict], bool]) -> Predicate:
    def predicate(value: Any, resource: dict, root: dict) -> bool | None:
        try:
            return fn(value, resource, root)
        except _Unsure:
            return None
    predicate.__name__ = fn.__name__
    predicate.__doc__ = fn.__doc__
    return predicate


# --------------------------------------------------------------------------------------------- DomainResource
@_safe
def dom_2(value, resource, root):
    """contained.contained.empty()"""
    return not any(_dicts(c, "contained") for c in _dicts(value, "contained"))


@_safe
def dom_3(value, resource, root):
    """Every contained resource is referenced from its container (by a ``reference`` of ``#id``).

    Settled here only when there is nothing contained or every contained id is found as a
    ``reference``; a resource referenced by canonical, uri or url, or through ``#``, goes to FHIRPath."""
    contained = _dicts(value, "contained")
    if not contained:
        return True
    wanted = set()
    for c in contained:
        cid = _text(c, "id")
        if cid is None:
            raise _Unsure
        wanted.add("#" + cid)
    found = set()
    stack: list[Any] = [resource]
    while stack and wanted - found:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref in wanted:
                found.add(ref)
            stack.extend(v for k, v in node.items() if not k.startswith("_") and isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    if wanted <= found:
        return True
    raise _Unsure


@_safe
def dom_4(value, resource, root):
    """contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"""
    for c in _dicts(value, "contained"):
        meta = _object(c, "meta")
        if meta is not None and (_text(meta, "versionId") is not None or _text(meta, "lastUpdated") is not None):
            return False
    return True


@_safe
def dom_5(value, resource, root):
    """contained.meta.security.empty()"""
    for c in _dicts(value, "contained"):
        meta = _object(c, "meta")
        if meta is not None and _dicts(meta, "security"):
            return False
    return True


@_safe
def dom_6(value, resource, root):
    """text.`div`.exists()"""
    text = _object(value, "text")
    return text is not None and _text(text, "div") is not None


# --------------------------------------------------------------------------------------------- Bundle
def _bundle_type(bundle: Any) -> str | None:
    return _text(bundle, "type")


def _implies_document(bundle: Any, kind: str) -> bool:
    """Whether ``type = kind implies X`` is settled without X (type absent or another type)."""
    btype = _bundle_type(bundle)
    return btype != kind


@_safe
def bdl_1(value, resource, root):
    """total.empty() or (type = 'searchset') or (type = 'history')"""
    total = _field(value, "total", (int,))
    if total is _ABSENT:
        return True
    btype = _bundle_type(value)
    return btype is None or btype in ("searchset", "history")


@_safe
def bdl_2(value, resource, root):
    """entry.search.empty() or (type = 'searchset')"""
    if not any(_object(e, "search") is not None for e in _dicts(value, "entry")):
        return True
    btype = _bundle_type(value)
    return btype is None or btype == "searchset"


def _entries_match(value: Any, resource: dict, part: str, kinds: tuple[str, ...]) -> bool:
    entries = _dicts(value, "entry")
    if not entries:
        return True
    btype = _bundle_type(resource)
    if btype is None:
        raise _Unsure
    expected = btype in kinds
    return all((_object(e, part) is not None) == expected for e in entries)


@_safe
def bdl_3(value, resource, root):
    """entry.all(request.exists() = (%resource.type = 'batch' or 'transaction' or 'history'))"""
    return _entries_match(value, resource, "request", ("batch", "transaction", "history"))


@_safe
def bdl_4(value, resource, root):
    """entry.all(response.exists() = (%resource.type = 'batch-response' or 'transaction-response' or 'history'))"""
    return _entries_match(value, resource, "response", ("batch-response", "transaction-response", "history"))


@_safe
def bdl_5(value, resource, root):
    """resource.exists() or request.exists() or response.exists() (on Bundle.entry)"""
    return any(_object(value, part) is not None for part in ("resource", "request", "response"))


@_safe
def bdl_7(value, resource, root):
    """(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()"""
    btype = _bundle_type(value)
    if btype is None or btype == "history":
        return True
    keys = []
    for e in _dicts(value, "entry"):
        full_url = _text(e, "fullUrl")
        if full_url is None:
            continue
        res = _object(e, "resource")
        meta = _object(res, "meta") if res is not None else None
        version = _text(meta, "versionId") if meta is not None else None
        keys.append(full_url + (version or ""))
    return len(set(keys)) == len(keys)


@_safe
def bdl_8(value, resource, root):
    """fullUrl.contains('/_history/').not() (on Bundle.entry)"""
    full_url = _text(value, "fullUrl")
    return full_url is None or "/_history/" not in full_url


@_safe
def bdl_9(value, resource, root):
    """type = 'document' implies (identifier.system.exists() and identifier.value.exists())"""
    if _implies_document(value, "document"):
        return True
    identifier = _object(value, "identifier")
    return identifier is not None and _text(identifier, "system") is not None and _text(identifier, "value") is not None


@_safe
def bdl_10(value, resource, root):
    """type = 'document' implies (timestamp.hasValue())

    fhirpathpy answers an absent timestamp's hasValue() with empty, so only a present one is judged:
    and a present one has a value."""
    _text(value, "timestamp")
    return True


def _first_resource_is(value: Any, kind: str, rtype: str) -> bool:
    if _implies_document(value, kind):
        return True
    entries = _dicts(value, "entry")
    if not entries:
        return True
    res = _object(entries[0], "resource")
    if res is None:
        return True
    found = res.get("resourceType")
    if not isinstance(found, str):
        raise _Unsure
    return found == rtype


@_safe
def bdl_11(value, resource, root):
    """type = 'document' implies entry.first().resource.is(Composition)"""
    return _first_resource_is(value, "document", "Composition")


@_safe
def bdl_12(value, resource, root):
    """type = 'message' implies entry.first().resource.is(MessageHeader)"""
    return _first_resource_is(value, "message", "MessageHeader")


# --------------------------------------------------------------------------------------------- datatypes
@_safe
def ref_1(value, resource, root):
    """reference.startsWith('#').not() or (reference.substring(1) in %rootResource.contained.id)"""
    ref = _text(value, "reference")
    if ref is None or not ref.startswith("#") or ref == "#":  # "#": substring(1) is empty, so is the result
        return True
    ids = []
    for c in _dicts(root, "contained"):
        cid = _text(c, "id")
        if cid is not None:
            ids.append(cid)
    return ref[1:] in ids


@_safe
def per_1(value, resource, root):
    """start.hasValue().not() or end.hasValue().not() or (start <= end): settled here only when one is absent."""
    if _text(value, "start") is None or _text(value, "end") is None:
        return True
    raise _Unsure


@_safe
def qty_3(value, resource, root):
    """code.empty() or system.exists()"""
    return _text(value, "code") is None or _text(value, "system") is not None


@_safe
def sqty_1(value, resource, root):
    """comparator.empty()"""
    return _text(value, "comparator") is None


_DOM_3 = ("contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) | "
          "%resource.descendants().as(uri) | %resource.descendants().as(url))) or descendants().where(reference = '#')"
          ".exists() or descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#')"
          ".exists()).not()).trace('unmatched', id).empty()")
_DOM_3_R4B = ("contained.where(((id.exists() and ('#'+id in (%resource.descendants().reference | "
              "%resource.descendants().as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url))))"
              " or descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or "
              "descendants().where(as(uri) = '#').exists()).not()).trace('unmatched', id).empty()")

# --------------------------------------------------------------------------------------------- PAS
_PAS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
_CERTIFICATION_TYPE = _PAS + "extension-certificationType"
_LEVEL_OF_SERVICE = _PAS + "extension-levelOfServiceCode"


def _extension_value(ext: dict) -> Any:
    """The one ``value[x]`` of an extension (:data:`_ABSENT` when there is none); unusual shapes
    (two values, a ``_value`` part) are FHIRPath's to judge."""
    found = [(k, v) for k, v in ext.items() if k.startswith("value") or k.startswith("_value")]
    if not found:
        return _ABSENT
    if len(found) > 1 or found[0][0].startswith("_"):
        raise _Unsure
    return found[0][1]


@_safe
def pas_immediate_level_of_care(value, resource, root):
    """ImmediateLevelOfCare (PAS Claim.item): a certification type whose value's ``code`` is 1
    (immediate appeal) needs a level-of-service code. The extension's value is a CodeableConcept,
    which has no ``code`` of its own, so for conformant data the rule never fires; a value with a
    ``code`` (a Coding sent in its place) is judged as FHIRPath judges it."""
    extensions = _dicts(value, "extension")
    immediate = False
    for ext in extensions:
        url = _text(ext, "url")
        if url != _CERTIFICATION_TYPE:
            continue
        ext_value = _extension_value(ext)
        if isinstance(ext_value, dict):
            code = _field(ext_value, "code", (str,))
            if code == "1":
                immediate = True
        elif ext_value is not _ABSENT and not isinstance(ext_value, (str, int, float)):
            raise _Unsure
    return not immediate or any(_text(ext, "url") == _LEVEL_OF_SERVICE for ext in extensions)


COMPILED: dict[str, Predicate] = {
    "contained.contained.empty()": dom_2,
    _DOM_3: dom_3,
    _DOM_3_R4B: dom_3,
    "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()": dom_4,
    "contained.meta.security.empty()": dom_5,
    "text.`div`.exists()": dom_6,
    "total.empty() or (type = 'searchset') or (type = 'history')": bdl_1,
    "entry.search.empty() or (type = 'searchset')": bdl_2,
    "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or "
    "%resource.type = 'history'))": bdl_3,
    "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = 'transaction-response' "
    "or %resource.type = 'history'))": bdl_4,
    "resource.exists() or request.exists() or response.exists()": bdl_5,
    "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId).isDistinct()": bdl_7,
    "fullUrl.contains('/_history/').not()": bdl_8,
    "fullUrl.exists() implies fullUrl.contains('/_history/').not()": bdl_8,
    "type = 'document' implies (identifier.system.exists() and identifier.value.exists())": bdl_9,
    "type = 'document' implies (timestamp.hasValue())": bdl_10,
    "type = 'document' implies entry.first().resource.is(Composition)": bdl_11,
    "type = 'message' implies entry.first().resource.is(MessageHeader)": bdl_12,
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))": ref_1,
    "start.hasValue().not() or end.hasValue().not() or (start <= end)": per_1,
    "code.empty() or system.exists()": qty_3,
    "comparator.empty()": sqty_1,
    # PAS 2.2.1 profile-claim and profile-claim-update, on Claim.item (about 1.6 ms a request through fhirpathpy)
    "extension.where(url='http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-certificationType' and "
    "value.code='1').exists() implies extension.where(url='http://hl7.org/fhir/us/davinci-pas/StructureDefinition/"
    "extension-levelOfServiceCode').exists()": pas_immediate_level_of_care,
}
