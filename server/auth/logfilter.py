"""Keep protected health information and credentials out of the application log.

Precert's own log lines name paths and ids, never bodies, query strings or tokens. Uvicorn's access
log (``precert serve --access-log``) would print query strings, which carry search values such as
patient names and member ids, so this filter cuts them off: ``GET /fhir/Patient?name=... `` is logged
as ``GET /fhir/Patient?[redacted]``. pymongo's debug log, which prints query documents, is held at
WARNING.
"""

from __future__ import annotations

import logging


class RedactQueryStrings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


_FILTER = RedactQueryStrings()


def install() -> None:
    logger = logging.getLogger("uvicorn.access")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    # pymongo's DEBUG command log prints whole queries and documents (names, member ids); it stays
    # at WARNING even when the server runs with --log-level debug.
    for name in ("pymongo", "mongomotor"):
        quiet = logging.getLogger(name)
        if quiet.level == logging.NOTSET or quiet.level < logging.WARNING:
            quiet.setLevel(logging.WARNING)
