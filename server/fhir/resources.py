"""The resource types Precert serves and the interactions each supports.

One declaration per type (HAPI's "one provider per resource type"), read by the REST router and by
the CapabilityStatement. A type's search parameters are declared in ``search_params``.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "create", "search-type")


@dataclass(frozen=True)
class ResourceProvider:
    type: str
    interactions: tuple[str, ...] = ALL_INTERACTIONS
    profiles: tuple[str, ...] = ()
    conditional_create: bool = True
    documentation: str = ""


DA_VINCI_TYPES = (
    "Patient", "Coverage", "Organization", "Practitioner", "PractitionerRole", "Location",
    "Encounter", "Appointment", "ServiceRequest", "DeviceRequest", "MedicationRequest",
    "NutritionOrder", "CommunicationRequest", "Device", "Questionnaire", "QuestionnaireResponse",
    "Library", "ValueSet", "CodeSystem", "Claim", "ClaimResponse", "Task", "Subscription",
    "DocumentReference", "AuditEvent", "Bundle",
)

PROVIDERS: dict[str, ResourceProvider] = {t: ResourceProvider(t) for t in DA_VINCI_TYPES}
# The audit trail is written by Precert itself; clients (administrators) read and search it.
PROVIDERS["AuditEvent"] = ResourceProvider(
    "AuditEvent", ("read", "search-type"), conditional_create=False,
    documentation="Precert's own audit trail: every access to PHI, every refusal, sign-in and token request.",
)
