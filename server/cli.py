"""The ``precert`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from server import __version__
from server.settings import Settings
from server.workers import MAX_DEFAULT_WORKERS, default_workers, serve_workers


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of workers") from None
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("workers must be between 1 and 64")
    return n


def _env_workers() -> int | None:
    text = os.environ.get("PRECERT_WORKERS", "").strip()
    return _workers(text) if text else None


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
    where = settings.mongodb_uri and "MongoDB at PRECERT_MONGODB_URI" or f"embedded database in {settings.data_dir.resolve()}"
    workers = args.workers if args.workers is not None else default_workers()
    print(f"Precert {__version__}: http://{args.host}:{args.port}/fhir/metadata ({where}, {workers} worker{'s' * (workers > 1)})", flush=True)
    if workers > 1:
        return serve_workers(settings, workers, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def _walkthrough(args: argparse.Namespace) -> int:
    from server.walkthrough import run

    logging.getLogger("httpx").setLevel(logging.WARNING)
    run(args.base_url, args.reviewer, args.password)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="precert", description="Payer-side Da Vinci prior-authorization server")
    parser.add_argument("--version", action="version", version=f"precert {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default=os.environ.get("PRECERT_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PRECERT_PORT", "8080")))
    serve.add_argument("--data-dir", help="where the embedded database keeps its files (default ./precert-data)")
    serve.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded database (env PRECERT_MONGODB_URI)")
    serve.add_argument("--base-url", help="public base URL, e.g. https://payer.example.org (env PRECERT_BASE_URL)")
    serve.add_argument("--no-sandbox", action="store_true", help="do not load the demo payer, members and providers")
    serve.add_argument("--workers", type=_workers, default=_env_workers(),
                       help=f"server processes on the port (env PRECERT_WORKERS; default one per core, at most {MAX_DEFAULT_WORKERS})")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true", help="log each request line (paths only; no bodies)")
    serve.set_defaults(func=_serve)

    from server.auth.cli import add_subcommands  # precert clients | staff | signing-key

    add_subcommands(sub)

    walk = sub.add_parser("walkthrough", help="drive one prior authorization from order to decision against a running sandbox")
    walk.add_argument("--base-url", default="http://127.0.0.1:8080")
    walk.add_argument("--reviewer", default="reviewer")
    walk.add_argument("--password", default="reviewer-sandbox")
    walk.set_defaults(func=_walkthrough)

    from questionnaires.build import add_subcommand as add_build_libraries  # precert build-libraries
    from server.fhir.validate_cli import add_subcommand as add_validate  # precert validate

    add_build_libraries(sub)
    add_validate(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
