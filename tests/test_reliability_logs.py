"""Access log lines carry the route template, never the raw id or query string."""

from __future__ import annotations

import logging

from server.app import create_app
from server.limits import RouteTemplateLogFilter


def _line(app, method: str, path: str) -> str:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", method, path, "1.1", 200), None)
    RouteTemplateLogFilter(app).filter(record)
    return record.getMessage()


def test_an_access_log_line_names_the_route_not_the_patient(settings):
    app = create_app(settings)
    line = _line(app, "GET", "/fhir/Patient/john-smith-1960-01-01?name=Smith&birthdate=1960-01-01")
    assert "/fhir/{rtype}/{rid}" in line
    assert "john-smith" not in line and "Smith" not in line and "1960" not in line


def test_an_access_log_line_for_an_operation_names_the_operation_template(settings):
    app = create_app(settings)
    line = _line(app, "POST", "/review/api/cases/PA-12345/decision")
    assert "PA-12345" not in line
    assert "/review/api/cases/{case_id}/decision" in line
