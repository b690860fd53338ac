"""Log records land on the task that was running when they were logged, and each log line names its task.

Run: ``python examples/logging_tail.py``, then ``taskreport get <id>`` to see the task's ``logs`` and
``log_error``.
"""

from __future__ import annotations

import logging
import sys

import taskreport
from taskreport.integrations.logging import LoggingIntegration

# %(taskreport_task)s is the current task's reference (empty outside a task): grep the logs for a task
logging.basicConfig(level=logging.INFO, format="%(levelname)-7s [%(taskreport_task)s] %(name)s: %(message)s",
                    stream=sys.stdout)
taskreport.init(integrations=[LoggingIntegration(tail=20)])
log = logging.getLogger("importer")


@taskreport.track(name="import-orders")
def import_orders(rows: list[str | None]) -> int:
    log.info("importing %d rows", len(rows))
    imported = 0
    for number, row in enumerate(rows, 1):
        if row is None:
            log.warning("row %d is empty, skipped", number)
            continue
        try:
            int(row)
        except ValueError:
            # an ERROR record marks the task's data (log_error), with the exception; the task carries on
            log.exception("row %d could not be parsed", number)
            continue
        imported += 1
    log.info("imported %d of %d rows", imported, len(rows))
    return imported


def main() -> None:
    log.info("starting (no task is current yet: this record stays in the log only)")
    import_orders(["1", "2", None, "four", "5"])
    taskreport.flush()
    [task] = taskreport.list_tasks(name="import-orders")
    print(f"\n{task.name} {task.status.value}: {len(task.data['logs'])} records kept on the task")
    for record in task.data["logs"]:
        print(f"  {record['level']:<7} {record['logger']}: {record['message']}")
    error = task.data["log_error"]
    print(f"log_error: {error['message']!r} ({error['exception']})")
    print(f"\ntaskreport get {task.id}")


if __name__ == "__main__":
    main()
