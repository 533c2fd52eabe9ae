"""``precert clients``, ``precert staff`` and ``precert signing-key``: security administration from
the command line. They talk to the database directly (``PRECERT_MONGODB_URI`` or ``--mongodb-uri``;
without one, the embedded database in ``--data-dir``, which works only while the server is stopped;
with a running embedded server use the admin API instead).

Examples::

    precert signing-key > /etc/precert/token-key.pem          # then PRECERT_AUTH_SIGNING_KEY_FILE=...
    precert clients add --name "Inferno" --client-id inferno --npi 1234567893 \\
        --jwks-url https://inferno.healthit.gov/suites/custom/davinci_pas_server/.well-known/jwks.json \\
        --scope "system/Claim.cr system/ClaimResponse.rs system/Subscription.cruds"
    precert clients add --name "Clinic EHR" --npi 1234567893 --jwks-file clinic-jwks.json
    precert clients list | show ID | disable ID | enable ID | remove ID
    precert staff add alice --role reviewer --licence RN      # password asked, or --password-file
    precert staff add drlee --role medical-director --licence MD --display "Dr Lee"
    precert staff update alice --licence NP [--role reviewer ...] [--npi 1234567893]
    precert staff list | roles alice --role reviewer | disable alice | enable alice | password alice | remove alice

A staff account's licence (``--licence``) is one of MD, DO (physician reviewers: they may deny or
modify on clinical grounds), RN, LPN, NP, PA, PharmD (clinical reviewers), or none for an
administrator; see :data:`server.auth.staff.LICENCES`. An unknown licence is refused (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path

from server.settings import Settings

NPI_HELP = "the staff member's own NPI (ten digits), named as the reviewer on PAS 2.2.1 decisions"
LICENCE_HELP = "licence type: MD or DO (physician reviewer), RN, LPN, NP, PA or PharmD (clinical reviewer); none for an administrator"


def add_subcommands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mongodb-uri", help="MongoDB URI (env PRECERT_MONGODB_URI)")
    common.add_argument("--data-dir", help="embedded database directory when no URI is given (default ./precert-data)")

    clients = sub.add_parser("clients", help="register and manage SMART Backend Services clients")
    csub = clients.add_subparsers(dest="action", required=True)
    add = csub.add_parser("add", parents=[common], help="register a client")
    add.add_argument("--name", required=True)
    add.add_argument("--client-id", help="default: a random id")
    add.add_argument("--npi", help="the provider organization's NPI")
    add.add_argument("--organization", help="the provider organization's identifier as system|value (instead of --npi)")
    add.add_argument("--jwks-url", help="the client's JWK Set URL (https)")
    add.add_argument("--jwks-file", help="a file with the client's public JWK Set")
    add.add_argument("--scope", help="allowed scopes, space-separated (default: the PAS/DTR set)")
    for name in ("list", "show", "disable", "enable", "remove"):
        p = csub.add_parser(name, parents=[common])
        if name != "list":
            p.add_argument("client_id")
    clients.set_defaults(func=lambda a: _run(_clients, a))

    staff = sub.add_parser("staff", help="manage payer staff accounts (reviewer, medical-director, administrator)")
    ssub = staff.add_subparsers(dest="action", required=True)
    sadd = ssub.add_parser("add", parents=[common])
    sadd.add_argument("username")
    sadd.add_argument("--role", action="append", required=True, choices=["reviewer", "medical-director", "administrator"])
    sadd.add_argument("--display", default="")
    sadd.add_argument("--licence", "--license", dest="licence", default=None, help=LICENCE_HELP)
    sadd.add_argument("--npi", default=None, help=NPI_HELP)
    sadd.add_argument("--password-file", help="read the password from this file (default: ask)")
    upd = ssub.add_parser("update", parents=[common], help="change a staff account's licence, roles and/or NPI")
    upd.add_argument("username")
    upd.add_argument("--licence", "--license", dest="licence", default=None, help=LICENCE_HELP + " ('' to clear)")
    upd.add_argument("--role", action="append", choices=["reviewer", "medical-director", "administrator"])
    upd.add_argument("--npi", default=None, help=NPI_HELP + " ('' to clear)")
    roles = ssub.add_parser("roles", parents=[common])
    roles.add_argument("username")
    roles.add_argument("--role", action="append", required=True, choices=["reviewer", "medical-director", "administrator"])
    pw = ssub.add_parser("password", parents=[common])
    pw.add_argument("username")
    pw.add_argument("--password-file")
    for name in ("list", "disable", "enable", "remove"):
        p = ssub.add_parser(name, parents=[common])
        if name != "list":
            p.add_argument("username")
    staff.set_defaults(func=lambda a: _run(_staff, a))

    key = sub.add_parser("signing-key", help="print a new access-token signing key (EC P-256, PEM)")
    key.set_defaults(func=_signing_key)


def _signing_key(args) -> int:
    from server.auth.tokens import generate_signing_key

    sys.stdout.write(generate_signing_key().decode())
    return 0


def _password(args) -> str:
    if getattr(args, "password_file", None):
        return Path(args.password_file).read_text().strip()
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("the passwords differ")
    return first


def _run(fn, args) -> int:
    settings = Settings.from_env().with_overrides(
        mongodb_uri=args.mongodb_uri, data_dir=Path(args.data_dir) if args.data_dir else None
    )
    password = _password(args) if fn is _staff and args.action in ("add", "password") else None

    async def main() -> int:
        from server.storage import Storage

        embedded = None
        uri = settings.mongodb_uri
        if uri is None:
            from server.embedded_db import EmbeddedDatabase

            embedded = EmbeddedDatabase(settings.data_dir / "db", command=settings.embedded_db_command)
            embedded.start()
            uri = embedded.uri
        storage = Storage(uri, settings.db_name)
        storage.connect()
        try:
            return await fn(storage, settings, args, password)
        finally:
            await storage.close()
            if embedded is not None:
                embedded.stop()

    return asyncio.run(main())


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


async def _clients(storage, settings, args, _password) -> int:
    from server.auth.clients import ClientRegistry, RegistrationError, build_client

    registry = ClientRegistry(storage.collection("auth_clients"))
    production = settings.mode == "production"
    if args.action == "add":
        data: dict = {"name": args.name, "client_id": args.client_id}
        if args.organization:
            system, _, value = args.organization.partition("|")
            data["organization"] = {"system": system, "value": value} if value else {"value": system}
        elif args.npi:
            data["npi"] = args.npi
        if args.scope:
            data["scopes"] = args.scope
        if args.jwks_url:
            data["jwks_url"] = args.jwks_url
        if args.jwks_file:
            data["jwks"] = json.loads(Path(args.jwks_file).read_text())
        try:
            client = build_client(data, production)
            await registry.add(client)
        except RegistrationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        _print(client.public())
        return 0
    if args.action == "list":
        for c in await registry.all():
            org = c.organization
            print(f"{c.client_id}\t{'active' if c.active else 'disabled'}\t{org['system']}|{org['value']}\t{c.name}")
        return 0
    if args.action == "show":
        client = await registry.get(args.client_id)
        if client is None:
            print("error: no such client", file=sys.stderr)
            return 1
        _print(client.public())
        return 0
    if args.action in ("disable", "enable"):
        ok = await registry.set_active(args.client_id, args.action == "enable")
    else:
        ok = await registry.remove(args.client_id)
    if not ok:
        print("error: no such client", file=sys.stderr)
        return 1
    print(f"{args.client_id}: {args.action}d")
    return 0


async def _staff(storage, settings, args, password) -> int:
    from server.auth.config import AuthConfig
    from server.auth.staff import StaffDirectory

    directory = StaffDirectory(storage.collection("auth_staff"), storage.collection("auth_staff_sessions"),
                               AuthConfig(), settings.mode == "production")
    try:
        if args.action == "add":
            _print(await directory.add(args.username, password, args.role, args.display, licence=args.licence, npi=args.npi))
            return 0
        if args.action == "list":
            for u in await directory.list():
                print(f"{u['username']}\t{'active' if u['active'] else 'disabled'}\t{','.join(u['roles'])}\t{u['licence'] or '-'}\t{u['display']}")
            return 0
        if args.action == "remove":
            ok = await directory.remove(args.username)
            result = {"removed": args.username} if ok else None
        elif args.action == "roles":
            result = await directory.update(args.username, roles=args.role)
        elif args.action == "update":
            if args.licence is None and not args.role and args.npi is None:
                print("error: give --licence, --role and/or --npi", file=sys.stderr)
                return 2
            result = await directory.update(args.username, roles=args.role or None, licence=args.licence, npi=args.npi)
        elif args.action == "password":
            result = await directory.update(args.username, password=password)
        else:
            result = await directory.update(args.username, active=args.action == "enable")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print("error: no such user", file=sys.stderr)
        return 1
    _print(result)
    return 0
