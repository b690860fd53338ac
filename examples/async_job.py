"""An async job: a tracked coroutine fanning out to tracked children, one of which times out.

Run: ``python examples/async_job.py``, then ``taskreport list``.
"""

from __future__ import annotations

import asyncio

import taskreport


@taskreport.track(name="fetch")
async def fetch(url: str, delay: float) -> int:
    await asyncio.sleep(delay)  # stands for the network
    return len(url)


@taskreport.track(name="crawl", tags={"example": "async"})
async def crawl(urls: dict[str, float]) -> dict[str, int]:
    results: dict[str, int] = {}
    for url, delay in urls.items():
        try:
            # a fetch that times out is cancelled: its task is recorded as cancelled, the crawl goes on
            results[url] = await asyncio.wait_for(fetch(url, delay), timeout=0.2)
        except asyncio.TimeoutError:
            print(f"gave up on {url}")
    return results


def main() -> None:
    urls = {"https://example.com/a": 0.01, "https://example.com/slow": 5.0, "https://example.com/b": 0.02}
    print(asyncio.run(crawl(urls)))
    taskreport.flush()
    statuses = [r.status.value for r in taskreport.list_tasks(name="fetch")]
    print(f"crawl: {next(iter(taskreport.list_tasks(name='crawl'))).status.value}; fetches: {sorted(statuses)}")


if __name__ == "__main__":
    main()
