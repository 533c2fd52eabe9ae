"""The CapabilityStatement, derived from the registered resource providers, search parameters and
operations. Da Vinci CapabilityStatements are claimed (``instantiates``) only when registered by the
capability that makes them true."""

from __future__ import annotations

from server import __version__
from server.fhir.operations import registry
from server.fhir.resources import PROVIDERS
from server.fhir.search_params import SEARCH_PARAMS

_PARAM_DEFINITIONS = "http://hl7.org/fhir/SearchParameter/"

# Canonicals of the Da Vinci CapabilityStatements this server implements. Capabilities add theirs
# at import time through :func:`claim`.
_INSTANTIATES: list[str] = []
_SECURITY: dict = {}
_RESOURCE_EXTENSIONS: dict[str, list[dict]] = {}


def add_resource_extension(rtype: str, extension: dict) -> None:
    """An extension on a resource's entry, e.g. the subscription topics a server offers."""
    current = _RESOURCE_EXTENSIONS.setdefault(rtype, [])
    if extension not in current:
        current.append(extension)


def claim(canonical: str) -> None:
    if canonical not in _INSTANTIATES:
        _INSTANTIATES.append(canonical)


def set_security(security) -> None:
    """``security`` is a dict, or a callable taking the FHIR base URL and returning one."""
    _SECURITY.clear()
    _SECURITY.update(security if isinstance(security, dict) else {"__builder__": security})


def _resource_entry(rtype: str) -> dict:
    provider = PROVIDERS[rtype]
    entry: dict = {}
    if _RESOURCE_EXTENSIONS.get(rtype):
        entry["extension"] = list(_RESOURCE_EXTENSIONS[rtype])
    entry["type"] = rtype
    if provider.profiles:
        entry["supportedProfile"] = list(provider.profiles)
    entry["interaction"] = [{"code": code} for code in provider.interactions]
    entry["versioning"] = "versioned-update"
    entry["readHistory"] = True
    entry["updateCreate"] = True
    entry["conditionalCreate"] = provider.conditional_create
    entry["conditionalUpdate"] = False
    entry["conditionalDelete"] = "not-supported"
    includes = [f"{rtype}:{p.name}" for p in SEARCH_PARAMS.get(rtype, ()) if p.type == "reference"]
    if includes:
        entry["searchInclude"] = includes
    params = [
        {"name": "_id", "definition": _PARAM_DEFINITIONS + "Resource-id", "type": "token"},
        {"name": "_lastUpdated", "definition": _PARAM_DEFINITIONS + "Resource-lastUpdated", "type": "date"},
    ]
    for p in SEARCH_PARAMS.get(rtype, ()):
        params.append({"name": p.name, "definition": f"{_PARAM_DEFINITIONS}{rtype}-{p.name}", "type": p.type})
    entry["searchParam"] = params
    ops = [{"name": op.name, "definition": op.canonical} for op in registry.for_type(rtype)]
    if ops:
        entry["operation"] = ops
    return entry


def capability_statement(app, base: str) -> dict:
    rest: dict = {"mode": "server"}
    if _SECURITY:
        builder = _SECURITY.get("__builder__")
        rest["security"] = builder(base) if builder else _SECURITY
    rest["resource"] = [_resource_entry(t) for t in sorted(PROVIDERS)]
    system_ops = [{"name": op.name, "definition": op.canonical} for op in registry.system_level()]
    if system_ops:
        rest["operation"] = system_ops
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "publisher": "Precert",
        "kind": "instance",
        "software": {"name": "Precert", "version": __version__},
        "implementation": {"description": "Precert payer prior-authorization server", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
    if _INSTANTIATES:
        statement["instantiates"] = list(_INSTANTIATES)
    return statement
