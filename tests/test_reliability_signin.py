"""Failed staff sign-ins slow down the address they come from and never lock the account.

Each test signs in from its own loopback address (127.0.0.x, bound as the client's local address),
so the server sees distinct client addresses over real TCP. Time is moved on the throttle's clock
instead of being waited for.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from server.auth.throttle import SignInThrottle, SignInThrottled

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self):
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(srv):
    throttle = srv.app.state.precert.services["auth"].staff.throttle
    real, fake = throttle.clock, Clock()
    throttle.clock = fake
    yield fake
    throttle.clock = real


@pytest.fixture
def from_address(srv):
    """HTTP clients whose connections come from a given loopback address."""
    clients = []

    def make(address: str) -> httpx.Client:
        c = httpx.Client(base_url=srv.url, timeout=30, transport=httpx.HTTPTransport(local_address=address))
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def new_user(http, harness, username: str) -> None:
    resp = http.post("/admin/auth/staff", json={"username": username, "password": PASSWORD, "roles": ["reviewer"]},
                     headers=harness.admin_headers)
    assert resp.status_code == 201, resp.text


def sign_in(c: httpx.Client, username: str, password: str) -> httpx.Response:
    return c.post("/staff/login", json={"username": username, "password": password})


def test_failures_from_one_address_get_429_with_retry_after_and_the_owner_signs_in_from_another(http, harness, clock, from_address):
    new_user(http, harness, "throttled-1")
    attacker, owner = from_address("127.0.0.11"), from_address("127.0.0.12")
    for _ in range(5):
        assert sign_in(attacker, "throttled-1", "wrong").status_code == 401
    refused = sign_in(attacker, "throttled-1", PASSWORD)  # even the right password waits its turn
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "throttled"
    assert "token" not in refused.json() and "set-cookie" not in refused.headers
    assert sign_in(owner, "throttled-1", PASSWORD).status_code == 200


def test_each_further_failure_doubles_the_wait_up_to_the_cap(http, harness, clock, from_address):
    new_user(http, harness, "throttled-2")
    attacker = from_address("127.0.0.13")
    for _ in range(5):
        assert sign_in(attacker, "throttled-2", "wrong").status_code == 401
    waits = []
    for _ in range(14):
        refused = sign_in(attacker, "throttled-2", "wrong")
        assert refused.status_code == 429
        waits.append(int(refused.headers["retry-after"]))
        clock.advance(waits[-1])
        assert sign_in(attacker, "throttled-2", "wrong").status_code == 401
    assert waits[:5] == [1, 2, 4, 8, 16]
    assert max(waits) == 900
    # Never a lockout: once the wait is over, the right password signs in from that address too.
    clock.advance(int(sign_in(attacker, "throttled-2", PASSWORD).headers["retry-after"]))
    assert sign_in(attacker, "throttled-2", PASSWORD).status_code == 200


def test_a_successful_sign_in_resets_the_counter(http, harness, clock, from_address):
    new_user(http, harness, "throttled-3")
    c = from_address("127.0.0.14")
    for _ in range(4):
        assert sign_in(c, "throttled-3", "wrong").status_code == 401
    assert sign_in(c, "throttled-3", PASSWORD).status_code == 200
    for _ in range(4):  # four more: nine in all, but only four since the success
        assert sign_in(c, "throttled-3", "wrong").status_code == 401
    assert sign_in(c, "throttled-3", PASSWORD).status_code == 200


def test_counters_expire_after_the_window(http, harness, clock, from_address):
    new_user(http, harness, "throttled-4")
    c = from_address("127.0.0.15")
    for _ in range(5):
        assert sign_in(c, "throttled-4", "wrong").status_code == 401
    assert sign_in(c, "throttled-4", "wrong").status_code == 429
    clock.advance(1 + 15 * 60 + 1)  # the wait, then the window
    for _ in range(4):  # forgotten: four failures are free again
        assert sign_in(c, "throttled-4", "wrong").status_code == 401
    assert sign_in(c, "throttled-4", PASSWORD).status_code == 200


def test_one_address_guessing_many_usernames_is_slowed_too(http, harness, clock, from_address):
    c, colleague = from_address("127.0.0.16"), from_address("127.0.0.17")
    new_user(http, harness, "throttled-5")
    for i in range(20):
        assert sign_in(c, f"guess-{i}", "wrong").status_code == 401
    refused = sign_in(c, "throttled-5", PASSWORD)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert sign_in(colleague, "throttled-5", PASSWORD).status_code == 200


def test_the_review_sign_in_page_is_throttled_the_same_way(http, harness, clock, from_address):
    new_user(http, harness, "throttled-6")
    c = from_address("127.0.0.18")
    for _ in range(5):
        assert c.post("/review/login", data={"username": "throttled-6", "password": "wrong"}).status_code == 401
    refused = c.post("/review/login", data={"username": "throttled-6", "password": PASSWORD})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "Try again in 1 seconds" in refused.text
    clock.advance(1)
    assert c.post("/review/login", data={"username": "throttled-6", "password": PASSWORD}).status_code == 303


def test_every_worker_sees_the_same_counters(http, harness, srv, clock, from_address):
    """Another worker is another throttle over the same collection: it refuses the address too."""
    new_user(http, harness, "throttled-7")
    c = from_address("127.0.0.19")
    for _ in range(5):
        assert sign_in(c, "throttled-7", "wrong").status_code == 401
    mine = srv.app.state.precert.services["auth"].staff.throttle
    other = SignInThrottle(mine.collection, clock=clock)

    async def check():
        try:
            await other.check("throttled-7", "127.0.0.19")
        except SignInThrottled as exc:
            return exc.retry_after
        return None

    assert asyncio.run_coroutine_threadsafe(check(), srv.loop).result(30) == 1
