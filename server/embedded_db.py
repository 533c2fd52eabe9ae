"""The embedded database: SecantusDB, a MongoDB wire-protocol server, run as a child process.

SecantusDB is GPL-2.0, so it is run as a separate program and never imported. It is started in its
own session so that a Ctrl-C aimed at ``precert serve`` does not reach it before Precert has
finished its own shutdown; Precert then stops it with SIGTERM and waits.
"""

from __future__ import annotations

import logging
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from server import settings

log = logging.getLogger("precert.embedded_db")


_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
PIDFILE = "precert-embedded-db.json"


def free_port() -> int:
    """A port free at the time of asking. Only for callers that accept the race; the embedded
    database itself binds port 0 and reports what it got."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return []


def _command(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    raise RuntimeError(
        f"the embedded database program '{name}' was not found; install Precert with pip "
        "(it depends on secantusdb) or set PRECERT_MONGODB_URI to a MongoDB server"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    os.setsid()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def exit_process(reason: str) -> None:  # pragma: no cover - ends the process
    """Without its database the server can serve nothing: exit non-zero, so that whatever
    supervises Precert (systemd, Docker, Kubernetes) starts it again."""
    log.critical("%s; exiting so that the process supervisor restarts Precert", reason)
    logging.shutdown()
    os._exit(70)


class EmbeddedDatabase:
    """A SecantusDB server on loopback, on a data directory (or ``:memory:``).

    The server binds port 0 and Precert reads the port it got from its log, so no other process
    can take the port between choosing and binding. A pid file in the data directory names the
    database process and the Precert process that owns it, so that a start after a crash can tell
    an orphan of its own (ended) from a database another live Precert is using (refused).
    """

    def __init__(self, storage_path: str | Path, port: int | None = None, command: str = "secantusd-py"):
        self.storage_path = str(storage_path) if str(storage_path) == ":memory:" else str(Path(storage_path).resolve())
        self.requested_port = port
        self.port: int | None = port
        self.command = command
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def alive(self) -> bool:
        proc = self.process
        return proc is not None and proc.poll() is None

    @property
    def _pidfile(self) -> Path | None:
        return None if self.storage_path == ":memory:" else Path(self.storage_path) / PIDFILE

    # ------------------------------------------------------------------ orphans
    def orphaned(self) -> bool:
        """Whether the data directory is held by a database whose Precert has died (start() ends it)."""
        pidfile = self._pidfile
        try:
            record = json.loads(pidfile.read_text()) if pidfile is not None else None
            db_pid, owner = int(record["db_pid"]), int(record["owner_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return _alive(db_pid) and self._ours(db_pid) and not (_alive(owner) and _parent(db_pid) == owner)

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` is a SecantusDB serving exactly this data directory."""
        args = _cmdline(pid)
        if not args or not any("secantusd" in a for a in args[:2]):
            return False
        try:
            return args[args.index("--storage-path") + 1] == self.storage_path
        except (ValueError, IndexError):
            return False

    def _clear_orphan(self, timeout: float) -> None:
        pidfile = self._pidfile
        if pidfile is None or not pidfile.exists():
            return
        try:
            record = json.loads(pidfile.read_text())
            db_pid, owner = int(record["db_pid"]), int(record["owner_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            pidfile.unlink(missing_ok=True)
            return
        if not (_alive(db_pid) and self._ours(db_pid)):
            pidfile.unlink(missing_ok=True)
            return
        if owner != os.getpid() and _alive(owner) and _parent(db_pid) == owner:
            raise RuntimeError(f"the data directory {self.storage_path} is in use by Precert process {owner}")
        # An orphan of a Precert that died: it was told to stop when its parent died; give it the
        # time to close its files, then insist.
        log.warning("an earlier embedded database (pid %s) is still running on %s; ending it", db_pid, self.storage_path)
        deadline = time.monotonic() + timeout
        signalled = False
        while _alive(db_pid) and self._ours(db_pid):
            if time.monotonic() > deadline:
                os.kill(db_pid, signal.SIGKILL)
                break
            if not signalled:
                try:
                    os.kill(db_pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
                signalled = True
            time.sleep(0.05)
        while _alive(db_pid) and self._ours(db_pid) and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        pidfile.unlink(missing_ok=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> None:
        self._clear_orphan(timeout=15.0)
        self._spawn(self.requested_port or 0, timeout)

    def _spawn(self, port: int, timeout: float) -> None:
        if self.storage_path != ":memory:":
            Path(self.storage_path).mkdir(parents=True, exist_ok=True)
            self.log_path = Path(self.storage_path) / "secantusd.log"
        elif self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="precert-secantusd-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        out = open(self.log_path, "ab")
        args = [_command(self.command), "--host", "127.0.0.1", "--port", str(port), "--storage-path", self.storage_path]
        if settings.embedded_sync_on_commit():
            # Fsync the journal at every commit: survives power loss, at a large cost in write speed.
            args.append("--sync-on-commit")
        try:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        finally:
            out.close()
        self.process = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the embedded database exited at start (code {proc.returncode}); see {self.log_path}")
            found = self._reported_port(offset)
            if found:
                try:
                    with socket.create_connection(("127.0.0.1", found), timeout=0.5):
                        self.port = found
                        self._write_pidfile(proc.pid)
                        log.info("embedded database listening on 127.0.0.1:%s (%s)", found, self.storage_path)
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the embedded database did not start listening in time")

    def _reported_port(self, offset: int) -> int | None:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                match = _LISTENING.search(f.read(65536))
        except OSError:
            return None
        return int(match.group(1)) if match else None

    def _write_pidfile(self, db_pid: int) -> None:
        if self._pidfile is not None:
            self._pidfile.write_text(json.dumps({"db_pid": db_pid, "owner_pid": os.getpid(), "port": self.port}))

    def supervise(self, on_fatal, max_restarts: int = 5, window: float = 60.0) -> None:
        """Watch the database; when it dies, log it and start it again on the same port (the
        clients reconnect by themselves). More than ``max_restarts`` deaths in ``window`` seconds,
        or a restart that fails, calls ``on_fatal(reason)``."""
        deaths: list[float] = []

        def watch() -> None:
            while not self._stopping.is_set():
                proc = self.process
                if proc is None:
                    return
                code = proc.wait()
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                deaths[:] = [t for t in deaths if now - t < window] + [now]
                log.error("the embedded database (pid %s) died with code %s", proc.pid, code)
                if len(deaths) > max_restarts:
                    on_fatal(f"the embedded database died {len(deaths)} times in {window:.0f} s")
                    return
                try:
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self._spawn(self.port or 0, 30.0)
                    self.restarts += 1
                    log.warning("the embedded database was restarted on port %s", self.port)
                except Exception as exc:  # noqa: BLE001 - any failure to restart is fatal
                    on_fatal(f"the embedded database could not be restarted: {exc}")
                    return

        self._supervisor = threading.Thread(target=watch, name="embedded-db-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        with self._lock:
            proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            self._remove_pidfile()
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded database did not stop in %.0fs; killing it", timeout)
            proc.kill()
            proc.wait()
        self._remove_pidfile()

    def _remove_pidfile(self) -> None:
        if self._pidfile is not None:
            self._pidfile.unlink(missing_ok=True)
