"""The CDS Hooks feedback body (``POST /cds-services/{id}/feedback``), parsed by a pydantic model.

A refusal names the first element that is wrong, in the words of the spec's own field names, with
its location as the OperationOutcome issue's expression.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from server.fhir.errors import FHIRError

SHAPE = "feedback is {\"feedback\": [{card, outcome, outcomeTimestamp, ...}]}"


class Suggestion(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: StrictStr


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    card: StrictStr = Field(min_length=1)
    outcome: Literal["accepted", "overridden"]
    outcomeTimestamp: StrictStr = Field(min_length=1)
    acceptedSuggestions: list[Suggestion] | None = None
    overrideReason: dict | None = None

    @model_validator(mode="after")
    def _accepted_names_its_suggestions(self):
        if self.outcome == "accepted" and self.acceptedSuggestions is None:
            raise ValueError("acceptedSuggestions")
        return self


class Feedback(BaseModel):
    model_config = ConfigDict(extra="ignore")
    feedback: list[FeedbackItem] = Field(min_length=1)


_WORDS = {
    "card": "{where}.card (the card's uuid) is required",
    "outcome": "{where}.outcome must be 'accepted' or 'overridden'",
    "outcomeTimestamp": "{where}.outcomeTimestamp is required",
    "acceptedSuggestions": "{where}.acceptedSuggestions ([{{id}}]) is required when accepted",
    "overrideReason": "{where}.overrideReason must be an object",
}


def parse_feedback(body) -> Feedback:
    """The body as :class:`Feedback`, or a 400 :class:`FHIRError` naming the first wrong element."""
    try:
        return Feedback.model_validate(body)
    except ValidationError as exc:
        raise _refusal(exc.errors()[0]) from None


def _refusal(error: dict) -> FHIRError:
    loc = list(error.get("loc", ()))
    if len(loc) < 2 or loc[0] != "feedback" or not isinstance(loc[1], int):
        return FHIRError.single(400, "invalid", SHAPE, "feedback")
    where = f"feedback[{loc[1]}]"
    field = loc[2] if len(loc) > 2 else ("acceptedSuggestions" if "acceptedSuggestions" in str(error.get("msg")) else None)
    if field not in _WORDS:
        return FHIRError.single(400, "invalid", f"{where} must be an object", where)
    return FHIRError.single(400, "invalid", _WORDS[field].format(where=where), f"{where}.{field}")
