"""A task updated 1,000,000 times over T seconds: how many requests the server received, against the
bound T/flush_interval + 2, and whether the final value arrived. A real server on SQLite, over HTTP."""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import requests
from _server import serve

import taskreport

UPDATES = 1_000_000
INTERVAL = 0.5
#: spread the updates over this long, so that many flush cycles happen while they are made
SPREAD = 5.0


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["TASKREPORT_HOME"] = home
        os.environ["TASKREPORT_CONFIG"] = os.path.join(home, "config.toml")
        url, token, counter, stop = serve(os.path.join(home, "server.db"))
        try:
            taskreport.init(url=url, token=token, organization="bench", project="bench", flush_interval=INTERVAL)
            task = taskreport.Task.create("million updates", value_max=UPDATES)
            start = time.perf_counter()
            update = task.update
            chunk = 10_000
            for n in range(0, UPDATES, chunk):
                for i in range(n + 1, n + chunk + 1):
                    update(value=i)
                ahead = start + SPREAD * (n + chunk) / UPDATES - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            task.success()
            elapsed = time.perf_counter() - start
            assert taskreport.flush(30)
            received = counter.count
            bound = elapsed / INTERVAL + 2
            body = requests.get(f"{url}/api/bench/bench/tasks/{task.id}/", headers={"Authorization": f"Token {token}"},
                                timeout=10).json()
            print(f"{UPDATES:,} updates over T = {elapsed:.2f} s, flush_interval {INTERVAL} s")
            print(f"requests the server received: {received}  (bound T/interval + 2 = {bound:.1f}) "
                  f"-> {'OK' if received <= bound else 'OVER'}")
            print(f"updates per request: {UPDATES / received:,.0f}")
            print(f"final value on the server: {body['value']:,} status {body['status']} "
                  f"-> {'arrived' if body['value'] == UPDATES and body['status'] == 'success' else 'MISSING'}")
        finally:
            taskreport.shutdown()
            stop()


if __name__ == "__main__":
    main()
