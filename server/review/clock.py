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
* an extension, with a reason, moves the due time. Precert's rule: a *standard* request may be
  extended **once**, by 1 to 14 calendar days, and only while it is not yet overdue (the extension
  must be taken within the original timeframe). Expedited requests are not extended: an urgent
  request that cannot be decided in 72 hours should be decided on what is known.
"""

from __future__ import annotations

import threading
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


def check_extension(case: dict, days, at: datetime | None = None) -> str | None:
    """Why the case cannot be extended by ``days`` now, or None when it can."""
    if case.get("status") != "pended":
        return f"the case is {case.get('status')}; only pended cases can be extended"
    if case.get("urgency") not in EXTENDABLE:
        return "expedited requests are not extended; decide within 72 hours"
    if case.get("extension"):
        return "the decision timeframe was already extended once"
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= EXTENSION_MAX_DAYS:
        return f"days must be a whole number from 1 to {EXTENSION_MAX_DAYS}"
    if clock_state(case.get("due"), case.get("urgency"), at) == "overdue":
        return "the case is already overdue; an extension must be taken within the original timeframe"
    return None
