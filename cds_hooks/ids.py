"""Identifiers for cards, suggestions, assertions and audit records.

They must be unique, not secret, so they come from a process-local generator seeded from the OS
(one ``os.urandom`` call per process instead of one per identifier: several are made per hook call).
"""

from __future__ import annotations

import os
import random
import uuid

_rng = random.Random(os.urandom(32))
_pid = os.getpid()


def _check_fork() -> None:
    global _rng, _pid
    if os.getpid() != _pid:  # a forked worker must not repeat its parent's sequence
        _rng, _pid = random.Random(os.urandom(32)), os.getpid()


def new_uuid() -> str:
    """A random (version 4) UUID string."""
    _check_fork()
    return str(uuid.UUID(int=_rng.getrandbits(128), version=4))


def new_hex(length: int = 32) -> str:
    _check_fork()
    return f"{_rng.getrandbits(length * 4):0{length}x}"
