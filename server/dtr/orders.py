"""Reading what the payer rules need out of the order resources DTR receives (every CRD request type)."""

from __future__ import annotations

ORDER_TYPES = (
    "Appointment", "Encounter", "CommunicationRequest", "DeviceRequest", "ImmunizationRecommendation",
    "MedicationRequest", "NutritionOrder", "ServiceRequest", "SupplyRequest", "VisionPrescription",
)
NPI = "http://hl7.org/fhir/sid/us-npi"


def _codings(concept) -> list[dict]:
    if isinstance(concept, list):
        return [c for cc in concept for c in _codings(cc)]
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict) and isinstance(c.get("code"), str)]


def order_codes(order: dict, referenced: dict[str, dict] | None = None) -> list[dict]:
    """The Codings of what is ordered."""
    rtype = order.get("resourceType")
    if rtype == "ServiceRequest":
        return _codings(order.get("code"))
    if rtype == "DeviceRequest":
        codes = _codings(order.get("codeCodeableConcept"))
        ref = (order.get("codeReference") or {}).get("reference") if isinstance(order.get("codeReference"), dict) else None
        device = _resolve(order, ref, referenced)
        if device:
            codes += _codings(device.get("type"))
        return codes
    if rtype == "MedicationRequest":
        codes = _codings(order.get("medicationCodeableConcept"))
        ref = (order.get("medicationReference") or {}).get("reference") if isinstance(order.get("medicationReference"), dict) else None
        med = _resolve(order, ref, referenced)
        if med:
            codes += _codings(med.get("code"))
        return codes
    if rtype == "SupplyRequest":
        return _codings(order.get("itemCodeableConcept"))
    if rtype == "Appointment":
        return _codings(order.get("serviceType")) + _codings(order.get("serviceCategory"))
    if rtype == "Encounter":
        return _codings(order.get("serviceType")) + _codings(order.get("type"))
    if rtype == "NutritionOrder":
        return _codings((order.get("oralDiet") or {}).get("type") if isinstance(order.get("oralDiet"), dict) else None)
    if rtype == "CommunicationRequest":
        return _codings(order.get("category"))
    return []


def order_quantity(order: dict) -> float | None:
    for path in (("quantityQuantity", "value"), ("dispenseRequest", "quantity", "value"), ("quantity", "value")):
        node = order
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            return float(node)
    return None


def order_date(order: dict) -> str | None:
    for key in ("occurrenceDateTime", "start"):  # when the service happens (authoredOn is not)
        value = order.get(key)
        if isinstance(value, str):
            return value[:10]
    period = order.get("occurrencePeriod") or order.get("period")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return period["start"][:10]
    return None


def _resolve(order: dict, ref, referenced: dict[str, dict] | None) -> dict | None:
    if not isinstance(ref, str):
        return None
    if ref.startswith("#"):
        return next((c for c in order.get("contained") or [] if isinstance(c, dict) and c.get("id") == ref[1:]), None)
    return (referenced or {}).get(ref.split("/_history/")[0])


def provider_npis(order: dict, referenced: dict[str, dict] | None = None) -> list[str]:
    """NPIs of the requester and performers, from identifiers on the references or the referenced
    Practitioner / PractitionerRole / Organization resources."""
    refs = []
    for key in ("requester", "performer", "orderer"):
        value = order.get(key)
        refs += value if isinstance(value, list) else [value]
    out = []
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        ident = ref.get("identifier")
        if isinstance(ident, dict) and ident.get("system") == NPI and isinstance(ident.get("value"), str):
            out.append(ident["value"])
        target = _resolve(order, ref.get("reference"), referenced)
        if target:
            out += [i["value"] for i in target.get("identifier") or [] if isinstance(i, dict) and i.get("system") == NPI and isinstance(i.get("value"), str)]
            practitioner = _resolve(order, (target.get("practitioner") or {}).get("reference") if isinstance(target.get("practitioner"), dict) else None, referenced)
            if practitioner:
                out += [i["value"] for i in practitioner.get("identifier") or [] if isinstance(i, dict) and i.get("system") == NPI and isinstance(i.get("value"), str)]
    return list(dict.fromkeys(out))


def reason_codes(order: dict) -> list[dict]:
    return _codings(order.get("reasonCode"))


def subject_reference(order: dict) -> str | None:
    for key in ("subject", "patient", "beneficiary"):
        ref = order.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return None
