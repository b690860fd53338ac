"""Login timing: an unknown username against a wrong password for a real user, on a real server, same run.

Issue 10 measured an unknown user at about twice the time of a wrong password (median 116 vs 60 ms, no
overlap): the answer told which usernames exist. Both must now cost one scrypt at today's cost. Prints the
median, p10 and p90 of each, their ratio, and how far the two distributions overlap.

    python bench/server_login_timing.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    from server_fixtures import start_server

    with tempfile.TemporaryDirectory() as home:
        live, stop = start_server(str(Path(home) / "bench.db"), login_rate_limit=None)
        try:
            live.create_user("ada", "correct horse battery")
            url = f"{live.url}/api/authenticate/"
            times: dict[str, list[float]] = {"wrong password": [], "unknown user": []}
            with httpx.Client(timeout=30) as http:
                for _ in range(args.rounds):
                    # interleaved, so that whatever else the machine does weighs on both alike
                    for kind, username in (("wrong password", "ada"), ("unknown user", "nobody")):
                        started = time.perf_counter()
                        answer = http.post(url, json={"username": username, "password": "not the password"})
                        times[kind].append(time.perf_counter() - started)
                        assert answer.status_code == 401, answer.text
        finally:
            stop()
    for kind, values in times.items():
        deciles = statistics.quantiles(values, n=10)
        print(
            f"{kind:>15}: median {statistics.median(values) * 1000:6.1f} ms   "
            f"p10 {deciles[0] * 1000:6.1f} ms   p90 {deciles[-1] * 1000:6.1f} ms"
        )
    wrong, unknown = times["wrong password"], times["unknown user"]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    inside = sum(min(wrong) <= t <= max(wrong) for t in unknown) / len(unknown)
    print(f"unknown / wrong (medians): {ratio:.2f}   (issue 10 before: 116 / 60 ms = 1.93)")
    print(f"unknown-user times within the wrong-password range: {inside:.0%}   (before: 0%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
