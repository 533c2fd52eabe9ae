"""National Provider Identifiers: the identifier system and the check digit, for the demo data and
the demo clients alike."""

from __future__ import annotations

NPI = "http://hl7.org/fhir/sid/us-npi"


def npi(base8: str) -> str:
    """A valid NPI (Luhn check digit over the 80840 prefix) from eight digits after a leading 1."""
    digits = "80840" + "1" + base8
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return "1" + base8 + str((10 - total % 10) % 10)
