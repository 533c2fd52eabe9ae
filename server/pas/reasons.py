"""Denial reasons a reviewer chooses from. The code and its text go into the ClaimResponse
processNote, so the provider (and the CMS-0057-F reporting) sees a specific reason."""

SYSTEM = "http://precert.example.org/fhir/CodeSystem/denial-reason"

DENIAL_REASONS = {
    "medical-necessity": "The clinical information does not show the service is medically necessary under the plan's criteria.",
    "insufficient-documentation": "The documentation needed to decide was not provided after it was requested.",
    "not-covered": "The service is not a covered benefit under the member's plan.",
    "out-of-network": "The service is to be provided out of network and no exception applies.",
    "experimental": "The service is considered experimental or investigational for this condition.",
    "alternative-available": "A covered, clinically appropriate alternative should be tried first.",
    "duplicate": "The service duplicates one already authorized for the same period.",
    "other": "Other reason (see note).",
}
