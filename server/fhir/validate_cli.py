"""``precert validate FILE... [--profile URL]``: the profile validator on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from server.fhir import profiles

MAX_BYTES = 20 * 1024 * 1024


def _run(args: argparse.Namespace) -> int:

    failed = False
    for name in args.files:
        path = Path(name)
        try:
            if path.stat().st_size > MAX_BYTES:
                print(f"{name}: error: larger than {MAX_BYTES} bytes")
                failed = True
                continue
            resource = json.loads(path.read_bytes())
        except OSError as exc:
            print(f"{name}: error: cannot read: {exc.strerror}")
            failed = True
            continue
        except ValueError as exc:
            print(f"{name}: error: not JSON: {exc}")
            failed = True
            continue
        try:
            outcome = profiles.validate(resource, profile=args.profile)
        except profiles.UnknownProfile:
            print(f"{name}: error: profile {args.profile} is not known")
            failed = True
            continue
        except profiles.TooCostly as exc:
            print(f"{name}: error: {exc}")
            failed = True
            continue
        errors = profiles.errors(outcome)
        failed = failed or bool(errors)
        for issue in outcome["issue"]:
            if issue["severity"] == "information":
                continue
            where = ", ".join(issue.get("expression", []))
            key = (issue.get("details", {}).get("coding") or [{}])[0].get("code", "")
            print(f"{name}: {issue['severity']}: {where}: [{key}] {issue['diagnostics']}")
        print(f"{name}: {'FAILED' if errors else 'ok'} ({len(errors)} errors)")
    return 1 if failed else 0


def add_subcommand(sub) -> None:
    cmd = sub.add_parser("validate", help="validate FHIR JSON files against the IG profiles Precert ships")
    cmd.add_argument("files", nargs="+", metavar="FILE")
    cmd.add_argument("--profile", help="profile canonical URL (default: each resource's meta.profile and base type)")
    cmd.set_defaults(func=_run)
