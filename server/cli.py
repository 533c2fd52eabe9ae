"""The ``precert`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from server import __version__
from server.embedded_db import EmbeddedDatabase
from server.settings import Settings, SettingsError
from server.workers import MAX_DEFAULT_WORKERS, default_workers, serve_workers
from server import settings as settings_env


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of workers") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("workers must be between 1 and 64")
    return n


def _env_workers() -> int | None:
    text = settings_env.workers()
    return _workers(text) if text else None


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise CommandError(f"port {port} on {host} is not available ({exc.strerror}); is another server running? "
                               "choose another with --port") from None


def _check_data_dir_free(data_dir: Path) -> None:
    """The embedded database locks its files; a second server on them would fail deep in start-up."""
    import fcntl

    lock = data_dir / "db" / "WiredTiger.lock"
    if not lock.exists() or EmbeddedDatabase(data_dir / "db").orphaned():
        return  # free, or held by the database of a Precert that died: start-up ends that one
    with open(lock, "r+b") as f:
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CommandError(f"the data directory {data_dir.resolve()} is in use by another Precert server; "
                               "stop it or choose another with --data-dir") from None
        fcntl.lockf(f, fcntl.LOCK_UN)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    settings = Settings.from_env().with_overrides(
        mongodb_uri=args.mongodb_uri,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        base_url=args.base_url,
    )
    if args.no_sandbox:
        settings = settings.with_overrides(load_sandbox=False)
    _check_port_free(args.host, args.port)
    if settings.mongodb_uri is None:
        _check_data_dir_free(settings.data_dir)
    tls = {}
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CommandError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        for name in (args.tls_cert, args.tls_key):
            if not Path(name).is_file():
                raise CommandError(f"TLS file not found: {name}")
        tls = {"ssl_certfile": args.tls_cert, "ssl_keyfile": args.tls_key}
    scheme = "https" if tls else "http"
    where = settings.mongodb_uri and "MongoDB at PRECERT_MONGODB_URI" or f"embedded database in {settings.data_dir.resolve()}"
    workers = args.workers if args.workers is not None else default_workers()
    print(f"Precert {__version__}: {scheme}://{args.host}:{args.port}/fhir/metadata ({where}, {workers} worker{'s' * (workers > 1)})", flush=True)
    options = dict(host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log, **tls)
    if workers > 1:
        return serve_workers(settings, workers, **options)
    uvicorn.run(create_app(settings), **options)
    return 0


def _walkthrough(args: argparse.Namespace) -> int:
    from server.walkthrough import run

    logging.getLogger("httpx").setLevel(logging.WARNING)
    import httpx

    try:
        run(args.base_url, args.reviewer, args.password, verbose=args.verbose)
    except httpx.TransportError as exc:
        raise CommandError(f"cannot reach Precert at {args.base_url} ({exc.__class__.__name__}); "
                           "start it with `precert serve` or pass --base-url") from None
    except httpx.HTTPStatusError as exc:
        r = exc.response
        raise CommandError(f"{r.request.method} {r.request.url} answered {r.status_code}: {r.text[:300]}") from None
    return 0


def _example(args: argparse.Namespace) -> int:
    import httpx

    from server import examples

    logging.getLogger("httpx").setLevel(logging.WARNING)

    if not (examples.EXAMPLES / "index.json").is_file():
        raise CommandError(f"no examples at {examples.EXAMPLES}; run `precert example` from a clone of the repository")
    if not args.name:
        print(examples.listing())
        return 0
    example = examples.find(args.name)
    if example is None:
        raise CommandError(f"no example '{args.name}'; `precert example` lists them")
    try:
        response = examples.send(example, args.url)
    except httpx.TransportError as exc:
        raise CommandError(f"cannot reach Precert at {args.url} ({exc.__class__.__name__}); "
                           "start it with `precert serve` or pass --url") from None
    print(f"{response.status_code} {response.reason_phrase} (expected: {example.outcome})")
    try:
        print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(response.text)
    return 0 if response.status_code < 400 else 1


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except SettingsError as exc:  # a mistyped PRECERT_* variable, met while reading the defaults
        print(f"precert: {exc}", file=sys.stderr)
        return 2


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="precert", description="Payer-side Da Vinci prior-authorization server")
    parser.add_argument("--version", action="version", version=f"precert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=settings_env.host())
    serve.add_argument("--port", type=int, default=settings_env.port())
    serve.add_argument("--data-dir", help="where the embedded database keeps its files (default ./precert-data)")
    serve.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded database (env PRECERT_MONGODB_URI)")
    serve.add_argument("--base-url", help="public base URL, e.g. https://payer.example.org (env PRECERT_BASE_URL)")
    serve.add_argument("--no-sandbox", action="store_true", help="do not load the demo payer, members and providers")
    serve.add_argument("--workers", type=_workers, default=_env_workers(),
                       help=f"server processes on the port (env PRECERT_WORKERS; default one per core, at most {MAX_DEFAULT_WORKERS})")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true", help="log each request line (paths only; no bodies)")
    serve.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain) file; needs --tls-key")
    serve.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    serve.set_defaults(func=_serve)

    from server.auth.cli import add_subcommands  # precert clients | staff | signing-key

    add_subcommands(sub)

    walk = sub.add_parser("walkthrough", help="drive one prior authorization from order to decision against a running sandbox")
    walk.add_argument("--base-url", default="http://127.0.0.1:8080")
    walk.add_argument("--reviewer", default="reviewer")
    walk.add_argument("--password", default="reviewer-sandbox")
    walk.add_argument("--verbose", action="store_true", help="print each request and response")
    walk.set_defaults(func=_walkthrough)

    ex = sub.add_parser("example", help="send one of the examples/ requests to a running server (no name: list them)")
    ex.add_argument("name", nargs="?")
    ex.add_argument("--url", default="http://127.0.0.1:8080", help="the server's base URL")
    ex.set_defaults(func=_example)

    from questionnaires.build import add_subcommand as add_build_libraries  # precert build-libraries
    from server.fhir.validate_cli import add_subcommand as add_validate  # precert validate

    add_build_libraries(sub)
    add_validate(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"precert: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `precert example NAME | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except Exception as exc:  # one line for the user; PRECERT_DEBUG=1 shows the traceback
        if settings_env.debug():
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        print(f"precert: {args.command} failed: {first[:500]} (PRECERT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
