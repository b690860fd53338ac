"""Celery: one taskreport task per Celery task, from its publication to its end.

``taskreport.init(integrations=[CeleryIntegration(...)])`` in the module that both the publishers and the
workers import. Which Celery tasks are tracked: every one with ``auto_track=True`` (narrowed by ``includes``
and ``excludes``), and, per task, ``@app.task(taskreport=True)``, ``@app.task(taskreport={...fields})`` or a
task whose base is :class:`TrackedTask`.

How a task is followed (the details and what each Celery state maps to are in ``docs/celery.md``):

- Every Celery task id has one reference, derived from the id alone (:func:`ref_for`), so that the publisher,
  the worker's pool children and the worker's main process all name the same record without talking to
  each other.
- **Publish** (``before_task_publish``): when the service knows task references, the record is created now,
  ``pending`` (no I/O: the flusher sends it). A header ``taskreport`` carries the publish time, the parent and
  whether the record was made. Against a service without references (a stock server of the API) nothing is
  created at publish: the worker creates the record when the task starts, so nothing is made twice.
- **Worker** (``task_prerun`` ... ``task_postrun``, in the pool child): the task is attached to (or created)
  and is the current task while it runs; its end is reported as success, error or a retry (pending again).
- **Worker's main process** (``task_received``, ``task_revoked``, ``task_failure`` of hard time limits and lost
  children): revocations, expiries, hard time limits and lost children end the record there.

Every hook does nothing unless the current client was made with this integration, and no exception of
the integration ever reaches Celery or the task: each is reported once (``taskreport._internal``).
"""

from __future__ import annotations

import os

from .. import DidNotEnable, require

celery = require("celery", "5.3", integration="Celery")

from celery import signals  # noqa: E402  (after the version check)

from ._main import _on_received, _revoked, _worker_init  # noqa: E402
from ._options import HEADER, CeleryIntegration, TrackedTask, ref_for  # noqa: E402
from ._publish import _before_publish, _wrap_beat  # noqa: E402
from ._state import _received, _retrying  # noqa: E402
from ._worker import _failure, _postrun, _prerun, _retry, _success  # noqa: E402

__all__ = ["HEADER", "CeleryIntegration", "DidNotEnable", "TrackedTask", "ref_for"]

_connected = False


def _connect() -> None:
    """Connect the signal handlers (strongly: they are module functions) and wrap beat, once."""
    global _connected
    if _connected:
        return
    for signal, handler in (
        (signals.before_task_publish, _before_publish),
        (signals.task_prerun, _prerun),
        (signals.task_postrun, _postrun),
        (signals.task_success, _success),
        (signals.task_retry, _retry),
        (signals.task_failure, _failure),
        (signals.task_revoked, _revoked),
        (signals.task_received, _on_received),
        (signals.worker_init, _worker_init),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"taskreport.{handler.__name__}")
    import wrapt

    wrapt.register_post_import_hook(_wrap_beat, "celery.beat")  # beat's module is imported by beat only
    _connected = True


def _forget_runs_after_fork() -> None:
    _received.clear()
    _retrying.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_runs_after_fork)
