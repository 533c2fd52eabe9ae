"""A small HTTP/1.1 load generator, run as its own process.

Closed loop (``--connections N``, each sends its next request when the last answer arrives) for
maximum throughput, or open loop (``--rate R``: requests start on a fixed schedule whatever the
server's speed, so queueing shows up in latency). Raw keep-alive sockets keep the client's own cost
low; it prints one JSON line of results.

The request body may contain ``{{uuid}}``, replaced by a fresh UUID in every request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid


def build_request(method: str, host: str, port: int, path: str, body: bytes | None, headers: list[str]) -> tuple[bytes, bytes]:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: application/fhir+json", *headers]
    return "\r\n".join(lines).encode(), body or b""


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


class Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def send(self, head: bytes, body: bytes) -> int:
        fresh = self.writer is None
        if fresh:
            await self._connect()
        if b"{{uuid}}" in body:
            body = body.replace(b"{{uuid}}", uuid.uuid4().hex.encode())
        payload = head + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        try:
            self.writer.write(payload)
            return await read_response(self.reader)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if fresh or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            # The server closed this keep-alive connection while it sat idle (uvicorn does after
            # 5 s; an open loop leaves spare connections idle that long) before reading anything of
            # the request: send it again on a new connection, as HTTP clients do.
            self.writer.close()
            await self._connect()
            self.writer.write(payload)
            return await read_response(self.reader)

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)


def summarize(latencies: list[float], statuses: dict, elapsed: float, sent: int) -> dict:
    lat = sorted(latencies)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    return {
        "requests": len(lat), "sent": sent, "seconds": round(elapsed, 2),
        "throughput": round(len(lat) / elapsed, 1) if elapsed else 0,
        "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
        "statuses": {str(k): v for k, v in statuses.items()},
    }


async def closed_loop(args, head: bytes, body: bytes) -> dict:
    latencies: list[float] = []
    statuses: dict = {}
    deadline = time.perf_counter() + args.duration
    warm_until = time.perf_counter() + args.warmup

    async def worker():
        conn = Conn(args.host, args.port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status = await conn.send(head, body)
            if t0 >= warm_until:
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.connections)))
    return summarize(latencies, statuses, time.perf_counter() - max(start, warm_until - args.warmup) - args.warmup, len(latencies))


async def open_loop(args, head: bytes, body: bytes) -> dict:
    latencies: list[float] = []
    statuses: dict = {}
    idle: list[Conn] = [Conn(args.host, args.port) for _ in range(args.connections)]
    total = int(args.rate * args.duration)
    interval = 1.0 / args.rate
    tasks = []

    async def one(scheduled: float):
        conn = idle.pop() if idle else Conn(args.host, args.port)
        try:
            status = await conn.send(head, body)
        finally:
            idle.append(conn)
        # Latency counts from the scheduled start, so a server that falls behind is charged for it.
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return summarize(latencies, statuses, time.perf_counter() - start, total)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--path", required=True)
    ap.add_argument("--body-file")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--rate", type=float, help="open loop at this many requests per second")
    args = ap.parse_args()
    body = open(args.body_file, "rb").read() if args.body_file else b""
    headers = list(args.header)
    if body:
        headers.append("Content-Type: application/fhir+json")
    head, body = build_request(args.method, args.host, args.port, args.path, body, headers)
    runner = open_loop if args.rate else closed_loop
    print(json.dumps(asyncio.run(runner(args, head, body))))


if __name__ == "__main__":
    main()
