"""National Provider Identifiers: the identifier system and the check digit, for the demo data and
the demo clients alike."""

from __future__ import annotations

NPI = "http://hl7.org/fhir/sid/us-npi"


def _luhn_sum(digits: str) -> int:
    """The Luhn sum of ``digits``, the last (the check digit's place) counted as it is."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total


def is_valid_npi(value: str) -> bool:
    """Ten digits whose last is the check digit over the 80840 prefix (as every issued NPI's is)."""
    return isinstance(value, str) and len(value) == 10 and value.isdigit() and _luhn_sum("80840" + value) % 10 == 0


def npi(base8: str) -> str:
    """A valid NPI (Luhn check digit over the 80840 prefix) from eight digits after a leading 1."""
    body = "1" + base8
    return body + str((10 - _luhn_sum("80840" + body + "0") % 10) % 10)
