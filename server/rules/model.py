"""The payer rules' public data types: what callers pass in and what they get back.

CRD, DTR and PAS all ask the same question ("for this member, this service, these providers: covered?
prior authorization? what documentation?") through :class:`EvaluationInput` and read the answer from
:class:`Determination`, so the three can never disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

CATEGORIES = (
    "inpatient-surgery",
    "advanced-imaging",
    "specialty-drugs",
    "dme-home-oxygen",
    "dme-wheelchair",
    "dme-prosthetic",
    "behavioral-iop",
    "behavioral-residential",
)

COVERED = ("covered", "not-covered", "conditional")
PA_NEEDED = ("auth-needed", "no-auth", "satisfied", "performpa", "conditional")
DOC_NEEDED = ("clinical", "admin", "patient", "conditional")
DOC_PURPOSE = ("withpa", "withclaim", "withorder", "retain-doc", "OTH")
INFO_NEEDED = ("performer", "location", "timeframe", "contract", "detail", "OTH")
REVIEW = ("auto", "clinical")

# CRD's code system for coverage-assertion reasons (gold-card, no-member-found, ...).
CRD_TEMP = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp"
QUESTIONNAIRE_BASE = "http://precert.example.org/fhir/Questionnaire/"
LIBRARY_BASE = "http://precert.example.org/fhir/Library/"
CATEGORY_VERSION = "1.0.0"


def questionnaire_for(category: str) -> str:
    """The DTR Questionnaire canonical (``url|version``) for a service category."""
    return f"{QUESTIONNAIRE_BASE}{category}|{CATEGORY_VERSION}"


@dataclass
class EvaluationInput:
    codes: list[dict]              # Coding dicts of the ordered service/item (system, code, display)
    coverage: dict | None = None   # Coverage resource
    patient: dict | None = None
    order: dict | None = None      # the request resource (ServiceRequest/DeviceRequest/...) or a PAS Claim.item
    encounter: dict | None = None
    provider_ids: list[str] = ()   # NPIs of ordering/performing providers (gold-carding)
    diagnoses: list[dict] = ()     # Coding dicts (ICD-10-CM)
    quantity: float | None = None
    service_date: str | None = None  # FHIR date
    location: dict | None = None   # Location or Organization where performed (network / site of service)
    # Additions beyond the shared contract (all optional):
    # the Organization the coverage's payor resolves to, when the caller resolved it (e.g. from a PAS
    # Bundle); lets a payor given only as a reference be recognised by its identifiers.
    payer: dict | None = None
    # provider Organization references or ids ("Organization/org-clinic") for network status.
    provider_orgs: list[str] = ()


@dataclass
class Determination:
    rule_id: str | None
    category: str | None           # one of CATEGORIES, or None
    covered: str                   # "covered" | "not-covered" | "conditional"
    pa_needed: str                 # "auth-needed" | "no-auth" | "satisfied" | "performpa" | "conditional"
    doc_needed: list[str]          # "clinical", "admin", "patient", "conditional"; [] = none
    doc_purpose: list[str]         # "withpa", "withclaim", "withorder", "retain-doc", "OTH"
    info_needed: list[str]         # "performer", "location", "timeframe", "contract", "detail", "OTH"
    questionnaires: list[str]      # DTR Questionnaire canonicals, "url|version"
    reason: dict | None            # {"code", "system", "display"}; plain language in "display"
    instructions: list[str]
    links: list[dict]              # {"url": absolute, "label": str}
    billing_codes: list[dict]
    review: str                    # "auto": PAS may decide by DTR criteria; "clinical": always a human
    max_units: float | None        # PAS: more than this is modified (A6) down to it
    auth_period_days: int | None   # PAS: length of preAuthPeriod
    payer_match: bool              # False when the coverage is not this payer's (indeterminate answers)
    trace: list[str]               # plain-language steps, shown to reviewers
    # Additions beyond the shared contract (all defaulted):
    matched_code: dict | None = None          # the Coding that selected the rule
    alternatives: list[dict] = field(default_factory=list)  # covered alternatives {system, code, display, note}
    gold_carded: bool = False                 # pa_needed is "satisfied" because the provider is gold-carded
    coverage_active: bool = True              # False when the Coverage is cancelled or outside its period
    plan: str | None = None                   # the plan (Coverage.class plan value) the rule was chosen for
    # PAS: the payer opts in to automatic denial on clinical grounds (criteria not met) for this rule,
    # where its jurisdiction allows; otherwise a failed-criteria request pends for a physician.
    auto_clinical_denial: bool = False

    @property
    def needs_auth(self) -> bool:
        return self.pa_needed in ("auth-needed", "performpa")

    def as_dict(self) -> dict:

        return asdict(self)
