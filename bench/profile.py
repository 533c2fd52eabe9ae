"""Where one scenario's CPU goes: run Precert (one worker, embedded database), drive one scenario
closed-loop, and sample the worker with py-spy (``pip install py-spy``; not a dependency of
Precert). Prints the functions with the most samples, inclusive and by own time.

Run: python bench/profile.py crd [--seconds 15] [--seed 50000] [--top 40]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import threading

from harness import cleanup, load, start_database, start_precert, temp_data_dir
from seed import seed_uri
from suite import DB_NAME, SCENARIOS


def summarize(collapsed: str, top: int) -> str:
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    out = [f"{total} samples", "", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "own time:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=list(SCENARIOS))
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--rate", type=float, help="open loop at this rate instead of closed loop")
    ap.add_argument("--out", default="/tmp/precert-profile.txt", help="py-spy's collapsed stacks")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(__import__("pathlib").Path(sys.executable).with_name("py-spy"))
    data = temp_data_dir()
    db = start_database(data)
    precert, port = start_precert(data / "precert", mongodb_uri=db.uri)
    try:
        if args.seed:
            asyncio.run(seed_uri(db.uri, DB_NAME, args.seed, args.seed // 5))
        sc = SCENARIOS[args.scenario]
        load(port, sc, connections=4, duration=8)
        driver = threading.Thread(target=load, args=(port, sc), kwargs={"connections": 16, "duration": args.seconds + 4, "rate": args.rate})
        driver.start()
        subprocess.run([spy, "record", "--pid", str(precert.pid), "--duration", str(int(args.seconds)), "--format", "raw",
                        "--output", args.out, "--nonblocking"], check=True, capture_output=True)
        driver.join()
        print(summarize(open(args.out).read(), args.top))
    finally:
        precert.stop()
        db.stop()
        cleanup(data)


if __name__ == "__main__":
    main()
