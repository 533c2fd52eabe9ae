"""The time source of the review workbench, and the decision clocks it measures against.

Every "now" the workbench uses (overdue, due soon, extensions, appeal deadlines) comes from
:func:`now`, so tests and demonstrations can move time instead of waiting for it::

    from server.review import clock
    clock.freeze(received + timedelta(hours=70))   # time stands still here
    clock.advance(timedelta(hours=3))              # ... and moves on by three hours
    clock.reset()                                  # back to the wall clock

The server and the tests share the process, so a frozen clock applies to both.

Clocks (CMS-0057-F, 42 CFR 422.568/422.572 and their Medicaid/CHIP/QHP counterparts):

* expedited requests: a decision within 72 hours of receipt;
* standard requests: within 7 calendar days of receipt;
* an extension, with a reason, moves the due time, **once**, and only while the case is not yet
  overdue (the extension must be taken within the original timeframe). How far, and for which
  reasons, is the payer's **extension rule** for the request's service category and urgency
  (:func:`extension_rule`, from ``payer.clocks`` in the rules)::

      clocks:
        default: {standard_extension_days: 14}                 # every category not named
        specialty-drugs: {expedited_hours: 24, standard_hours: 24, standard_extension_days: 0}
        advanced-imaging: {standard_extension_days: 7, extension_reasons: [information-requested]}

  Without one, Precert's default: a *standard* request may be extended by 1 to 14 calendar days,
  for any of :data:`EXTENSION_REASONS`; an *expedited* request is not extended (an urgent request
  that cannot be decided in 72 hours should be decided on what is known). A request in several
  categories gets the strictest of their rules (fewest days, only the reasons all allow).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

EXPEDITED = timedelta(hours=72)
STANDARD = timedelta(days=7)
# "Due soon": less than this is left on the clock.
DUE_SOON = {"expedited": timedelta(hours=24), "standard": timedelta(hours=48)}
EXTENSION_MAX_DAYS = 14
EXTENDABLE = frozenset({"standard"})
EXTENSION_REASONS = {
    "information-requested": "More information was requested from the provider and is needed to decide.",
    "member-requested": "The member asked for more time.",
    "specialist-review": "Review by a specialist with the relevant expertise is needed.",
    "other": "Other reason (see note).",
}

_lock = threading.Lock()
_frozen: datetime | None = None
_offset = timedelta(0)


def _wall() -> datetime:
    return datetime.now(timezone.utc)


def now() -> datetime:
    """The current time (UTC, timezone-aware): the wall clock, unless frozen or shifted."""
    with _lock:
        if _frozen is not None:
            return _frozen
        return _wall() + _offset


def freeze(at: datetime) -> None:
    """Stop the clock at ``at`` (naive datetimes are taken as UTC)."""
    global _frozen
    with _lock:
        _frozen = aware(at)


def advance(delta: timedelta) -> None:
    """Move the clock on (or back) by ``delta``, frozen or not."""
    global _frozen, _offset
    with _lock:
        if _frozen is not None:
            _frozen = _frozen + delta
        else:
            _offset = _offset + delta


def reset() -> None:
    global _frozen, _offset
    with _lock:
        _frozen = None
        _offset = timedelta(0)


def aware(value: datetime | None) -> datetime | None:
    """MongoDB gives naive UTC datetimes back; make them timezone-aware."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def instant_text(value: datetime) -> str:
    """One text for every instant the review APIs return: UTC, milliseconds always, `Z`.

    MongoDB keeps milliseconds, so a whole second and the millisecond after it must not
    differ in form (`...:09Z` against `...:09.026Z` sorts the wrong way as text)."""
    moment = aware(value).astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timeframe(urgency: str | None) -> timedelta:
    return EXPEDITED if urgency == "expedited" else STANDARD


def due_from(received: datetime, urgency: str | None) -> datetime:
    return aware(received) + timeframe(urgency)


def clock_state(due: datetime | None, urgency: str | None, at: datetime | None = None) -> str:
    """'overdue', 'due-soon' or 'on-time' for an open clock."""
    if due is None:
        return "on-time"
    at = at or now()
    left = aware(due) - at
    if left < timedelta(0):
        return "overdue"
    if left <= DUE_SOON.get(urgency or "standard", DUE_SOON["standard"]):
        return "due-soon"
    return "on-time"


def describe_left(due: datetime | None, at: datetime | None = None) -> str:
    """'3 d 4 h left', '5 h 10 min left', 'overdue by 2 h' — for people."""
    if due is None:
        return ""
    at = at or now()
    delta = aware(due) - at
    late = delta < timedelta(0)
    text = span(abs(delta))
    return f"overdue by {text}" if late else f"{text} left"


def span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


@dataclass(frozen=True)
class ExtensionRule:
    """How a clock may be extended: once, by 1 to ``max_days`` days (0: not at all), for one of
    ``reasons``. ``source`` says where the rule comes from, for people."""
    urgency: str
    max_days: int
    reasons: tuple[str, ...]
    source: str

    @property
    def allowed(self) -> bool:
        return self.max_days > 0 and bool(self.reasons)

    def describe(self) -> str:
        if not self.allowed:
            return f"{self.urgency.capitalize()} requests here are not extended ({self.source})."
        return (f"{self.urgency.capitalize()} requests here may be extended once, by up to {self.max_days} day(s), "
                f"for: {', '.join(self.reasons)} ({self.source}).")

    def public(self) -> dict:
        return {"urgency": self.urgency, "max_days": self.max_days, "reasons": list(self.reasons), "times": 1,
                "allowed": self.allowed, "source": self.source}


DEFAULT_EXTENSION_DAYS = {"standard": EXTENSION_MAX_DAYS, "expedited": 0}


def extension_rule(clocks: dict | None, categories=(), urgency: str | None = "standard") -> ExtensionRule:
    """The extension rule for a request: per category from ``payer.clocks`` (``<urgency>_extension_days``,
    ``extension_reasons``), else the payer's ``default``, else :data:`DEFAULT_EXTENSION_DAYS`; the
    strictest when the request has several categories."""
    urgency = "expedited" if urgency == "expedited" else "standard"
    clocks = clocks or {}
    default = clocks.get("default") or {}
    days, reasons, sources = [], set(EXTENSION_REASONS), []
    for cat in list(categories or ()) or [None]:
        spec = (clocks.get(cat) or {}) if cat else {}
        if urgency in (spec.get("extension") or {}):
            days.append(spec["extension"][urgency])
            sources.append(f"payer rule for {cat}")
        elif urgency in (default.get("extension") or {}):
            days.append(default["extension"][urgency])
            sources.append("payer default")
        else:
            days.append(DEFAULT_EXTENSION_DAYS[urgency])
            sources.append("Precert default")
        allowed = spec.get("extension_reasons") or default.get("extension_reasons")
        if allowed:
            reasons &= set(allowed)
    return ExtensionRule(urgency, min(days), tuple(r for r in EXTENSION_REASONS if r in reasons),
                         ", ".join(dict.fromkeys(sources)))


def check_extension(case: dict, days, at: datetime | None = None, rule: ExtensionRule | None = None) -> str | None:
    """Why the case cannot be extended by ``days`` now under ``rule`` (by default Precert's own),
    or None when it can."""
    rule = rule or extension_rule(None, case.get("categories") or (), case.get("urgency"))
    if case.get("status") != "pended":
        return f"the case is {case.get('status')}; only pended cases can be extended"
    if not rule.allowed:
        if rule.source == "Precert default":
            return "expedited requests are not extended; decide within 72 hours"
        return f"{rule.urgency} requests in this category are not extended ({rule.source})"
    if case.get("extension"):
        return "the decision timeframe was already extended once"
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= rule.max_days:
        return f"days must be a whole number from 1 to {rule.max_days} ({rule.source})"
    if clock_state(case.get("due"), case.get("urgency"), at) == "overdue":
        return "the case is already overdue; an extension must be taken within the original timeframe"
    return None
