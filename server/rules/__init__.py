"""Payer rules: coverage, prior authorization and documentation requirements, kept as data.

CRD, DTR and PAS call :func:`get_rules` and ``RuleSet.evaluate``; nothing else decides coverage.

    from server.rules import get_rules
    from server.rules.model import EvaluationInput
    det = get_rules(request.app.state.precert).evaluate(EvaluationInput(codes=[...], coverage=cov))

The rule files live in ``PRECERT_RULES_DIR`` (default: the sandbox set in ``server/rules/sandbox/``).
They are re-read when any file changes (checked at most once a second, on use), or on
``POST /admin/rules/reload``. A change that fails validation leaves the previous set active and the
errors visible at ``GET /admin/rules``.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from server.rules.engine import RuleSet
from server.rules.loader import RulesError, load_directory, signature
from server import settings

log = logging.getLogger("precert.rules")

SANDBOX_DIR = Path(__file__).resolve().parent / "sandbox"
CHECK_INTERVAL = 1.0

__all__ = ["get_rules", "RuleSet", "RulesError", "RulesService", "rules_directory"]


def rules_directory() -> Path:
    configured = settings.rules_dir()
    return Path(configured) if configured else SANDBOX_DIR


class RulesService:
    """Holds the active :class:`RuleSet` and swaps it when the files change."""

    def __init__(self, directory: Path | str | None = None, check_interval: float = CHECK_INTERVAL):
        self.directory = Path(directory) if directory else rules_directory()
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._rules: RuleSet | None = None
        self._signature: tuple | None = None
        self._checked = 0.0
        self.loaded_at: float | None = None
        self.last_error: list[str] | None = None
        self.last_error_at: float | None = None
        self.reloads = 0

    def load(self) -> RuleSet:
        """Load now; raise :class:`RulesError` (and keep the old set) when the files are invalid."""
        with self._lock:
            sig = signature(self.directory) if self.directory.is_dir() else ()
            try:
                rules = load_directory(self.directory)
            except RulesError as exc:
                self.last_error, self.last_error_at = exc.errors, time.time()
                self._signature = sig  # do not retry the same broken files on every call
                log.error("rules in %s not loaded:\n%s", self.directory, "\n".join(exc.errors))
                raise
            self._rules, self._signature = rules, sig
            self.loaded_at, self.last_error, self.last_error_at = time.time(), None, None
            self.reloads += 1
            log.info("rules loaded from %s: %d rules (version %s)", self.directory, len(rules.rules), rules.version)
            return rules

    def current(self) -> RuleSet:
        now = time.monotonic()
        if self._rules is None:
            return self.load()
        if now - self._checked >= self.check_interval:
            self._checked = now
            try:
                changed = signature(self.directory) != self._signature
            except OSError:
                changed = False
            if changed:
                try:
                    self.load()
                except RulesError:
                    pass  # keep serving the last good set; the error is on /admin/rules
        return self._rules

    def status(self) -> dict:
        return {
            "directory": str(self.directory),
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)) if self.loaded_at else None,
            "reloads": self.reloads,
            "last_error": self.last_error,
            "last_error_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_error_at)) if self.last_error_at else None,
        }


_default: RulesService | None = None


def get_rules(app_state=None) -> RuleSet:
    """The current rule set (hot-reloaded). ``app_state`` is ``request.app.state.precert``; without
    it (scripts, unit tests) a process-wide service on the default directory is used."""
    global _default
    services = getattr(app_state, "services", None)
    if isinstance(services, dict):
        service = services.get("rules")
        if service is None:
            service = services["rules"] = RulesService()
        return service.current()
    if _default is None:
        _default = RulesService()
    return _default.current()
