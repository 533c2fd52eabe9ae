"""OperationOutcome helpers.

Every 4xx/5xx under ``/fhir`` is an OperationOutcome. Handlers raise :class:`FHIRError`, the kind
of :class:`server.errors.PrecertError` that carries a whole list of issues; the app's exception
handler renders it (:func:`server.errors.render`), so no route builds an error body by hand.
"""

from __future__ import annotations

from typing import Iterable

from server.errors import PrecertError


def issue(
    code: str,
    diagnostics: str,
    expression: str | Iterable[str] | None = None,
    severity: str = "error",
) -> dict:
    """One OperationOutcome.issue. ``code`` is from http://hl7.org/fhir/issue-type."""
    item: dict = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression] if isinstance(expression, str) else list(expression)
    return item


def operation_outcome(issues: list[dict]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues}


# The most issues one OperationOutcome lists.
MAX_ISSUES = 100


class FHIRError(PrecertError):
    """A refusal with every OperationOutcome issue found (an OperationOutcome under ``/fhir`` and
    ``/cds-services``; elsewhere a problem whose detail joins the issues' diagnostics)."""

    def __init__(self, status: int, issues: list[dict], headers: dict | None = None):
        errors = [i for i in issues if i.get("severity") in ("error", "fatal")] or issues
        message = "; ".join(i["diagnostics"] for i in errors[:5] if i.get("diagnostics")) or str(status)
        super().__init__(status, message, errors[0].get("code") if errors else None, headers=headers)
        if len(issues) > MAX_ISSUES:
            # A body with thousands of mistakes gets the first ones and a count, not megabytes.
            more = len(issues) - MAX_ISSUES
            issues = issues[:MAX_ISSUES] + [
                issue("too-costly", f"{more} more issues were found and not listed; only the first {MAX_ISSUES} are reported", severity="information")
            ]
        self.issues = issues

    def as_issues(self) -> list[dict]:
        return self.issues

    @classmethod
    def single(
        cls,
        status: int,
        code: str,
        diagnostics: str,
        expression: str | Iterable[str] | None = None,
    ) -> "FHIRError":
        return cls(status, [issue(code, diagnostics, expression)])

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


def bad_request(diagnostics: str, expression: str | None = None, code: str = "invalid") -> FHIRError:
    return FHIRError.single(400, code, diagnostics, expression)


def not_found(diagnostics: str) -> FHIRError:
    return FHIRError.single(404, "not-found", diagnostics)


def gone(diagnostics: str) -> FHIRError:
    return FHIRError.single(410, "deleted", diagnostics)


def conflict(diagnostics: str, status: int = 409) -> FHIRError:
    return FHIRError.single(status, "conflict", diagnostics)


def unprocessable(issues: list[dict]) -> FHIRError:
    return FHIRError(422, issues)
