"""Denial reasons: payer data, each classed administrative or clinical.

The class decides who may deny for it. An administrative reason (not a member, not a covered
benefit, an exclusion, a duplicate, a plan's limit) may be applied automatically or by any reviewer;
a clinical reason (criteria not met, documentation does not support the service) only by a
physician reviewer, after a human review (42 CFR 422.566(d)), unless the payer's rule opts in to
automatic clinical denial where its jurisdiction allows it.

Each reason carries the X12 278 HCR03 review decision reason code (X12 external code list 886)
that goes into the ClaimResponse's reviewAction, and its text goes into the processNote, so the
provider (and the CMS-0057-F reporting) sees a specific reason.

**The X12 codes below are placeholders** (``MN``, ``CN``, ... are Precert's own two-letter stand-ins,
not values from the 886 list). The 886 list is licensed by X12 and is not published openly, so
Precert cannot ship it; a payer replaces the second column with the codes of its own licence before
going live. :data:`X12_CODES_ARE_PLACEHOLDERS` says so to callers, and the denial-reasons API shows it.
"""

from __future__ import annotations

SYSTEM = "http://precert.example.org/fhir/CodeSystem/denial-reason"
X12_REASON_CS = "https://codesystem.x12.org/external/886"
ADMINISTRATIVE = "administrative"
CLINICAL = "clinical"

# Whether the X12 886 codes below are Precert's placeholders (True until a payer maps its licensed codes).
X12_CODES_ARE_PLACEHOLDERS = True

# code: (class, X12 886 code (a PLACEHOLDER: see above), plain-language text)
REASONS: dict[str, tuple[str, str, str]] = {
    "medical-necessity": (CLINICAL, "MN", "The clinical information does not show the service is medically necessary under the plan's criteria."),
    "criteria-not-met": (CLINICAL, "CN", "The answers given do not meet the plan's coverage criteria for this service."),
    "insufficient-documentation": (CLINICAL, "ID", "The documentation needed to decide was not provided after it was requested."),
    "experimental": (CLINICAL, "EI", "The service is considered experimental or investigational for this condition."),
    "alternative-available": (CLINICAL, "AL", "A covered, clinically appropriate alternative should be tried first."),
    "not-covered": (ADMINISTRATIVE, "NC", "The service is not a covered benefit under the member's plan."),
    "not-a-member": (ADMINISTRATIVE, "NE", "The patient is not an eligible member of the plan on the date of service."),
    "excluded-benefit": (ADMINISTRATIVE, "EX", "The service is excluded from the member's benefits."),
    "out-of-network": (ADMINISTRATIVE, "ON", "The service is to be provided out of network and no exception applies."),
    "duplicate": (ADMINISTRATIVE, "DU", "The service duplicates one already authorized for the same period."),
    "quantity-limit": (ADMINISTRATIVE, "QL", "The quantity asked for is over the plan's limit for one authorization."),
    "other": (ADMINISTRATIVE, "OT", "Other reason (see note)."),
}

# code -> text, for forms and older callers.
DENIAL_REASONS = {code: text for code, (_, _, text) in REASONS.items()}


def reason_class(code: str | None) -> str:
    """The class of a reason code; an unknown code counts as clinical (the cautious side)."""
    found = REASONS.get(code or "")
    return found[0] if found else CLINICAL


def is_clinical(code: str | None) -> bool:
    return reason_class(code) == CLINICAL


def x12_coding(code: str | None) -> dict | None:
    found = REASONS.get(code or "")
    if found is None:
        return None
    return {"system": X12_REASON_CS, "code": found[1], "display": found[2]}


def reason_public(code: str) -> dict:
    klass, x12, text = REASONS[code]
    return {"code": code, "text": text, "class": klass, "x12": x12, "x12_placeholder": X12_CODES_ARE_PLACEHOLDERS,
            "physician_only": klass == CLINICAL}


# The peer-to-peer discussion offered with every clinical denial: whom the provider calls, and for
# how many days after the decision. The payer's own comes from ``payer.peer_to_peer`` in the rules.
DEFAULT_PEER_TO_PEER = {"contact": "Precert utilization management, medical director line +1-800-555-0142 (option 2)", "window_days": 14}


def peer_to_peer_offer(configured: dict | None) -> dict:
    """{contact, window_days}: the payer's configured offer, else :data:`DEFAULT_PEER_TO_PEER`."""
    return {**DEFAULT_PEER_TO_PEER, **{k: v for k, v in (configured or {}).items() if k in DEFAULT_PEER_TO_PEER and v}}
