"""Exit and fork: every process the library runs in delivers (or spools) its task ends when it exits.

- The interpreter's exit: an ``atexit`` hook closes the process-wide client (flush with a deadline, spool
  the rest).
- ``os.fork``: the pending maps' locks are held across the fork, so a child never inherits one mid-update;
  the child starts with empty maps (its parent delivers what was pending) and fresh threads.
- multiprocessing children leave through ``os._exit``, past ``atexit``: they close the client from
  multiprocessing's own exit hook (registered again after multiprocessing clears it in each child).
- billiard's pool workers (Celery prefork) leave through ``os._exit`` from inside the worker, past every
  hook: the worker's exit method is wrapped, once, to close the client first.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from . import _client, _internal, _pending, _sender

_hooked_pid: int | None = None
_billiard_patched = False


def close_at_exit() -> None:
    client = _client.current_client()
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # pragma: no cover - never fail the interpreter's exit
            _internal.report("flushing at exit failed", exc)


def _hook_multiprocessing_exit(_client_obj: object = None) -> None:
    """Close the client from multiprocessing's exit hook, which its children run before ``os._exit``."""
    global _hooked_pid
    util = sys.modules.get("multiprocessing.util")
    if util is None or _hooked_pid == os.getpid():
        return
    _hooked_pid = os.getpid()
    # tied to no object: a finalizer tied to one would also fire when that object is collected, mid-job
    util.Finalize(None, close_at_exit, exitpriority=100)


def _patch_billiard() -> None:
    global _billiard_patched
    pool = sys.modules.get("billiard.pool")
    worker = getattr(pool, "Worker", None)
    if _billiard_patched or worker is None or not hasattr(worker, "_do_exit"):
        return
    import wrapt

    def closing_first(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        close_at_exit()
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(worker, "_do_exit", closing_first)
    _billiard_patched = True


def on_new_client(client: _client.Client) -> None:
    _hook_multiprocessing_exit()
    _patch_billiard()


def _before_fork() -> None:
    _patch_billiard()
    util = sys.modules.get("multiprocessing.util")
    client = _client.current_client()
    if util is not None and client is not None:
        # runs in each new multiprocessing (or billiard) child, after it clears the exit hooks it inherited
        util.register_after_fork(client, _hook_multiprocessing_exit)
    _pending.before_fork()


def _after_fork_parent() -> None:
    _pending.after_fork_parent()


def _after_fork_child() -> None:
    global _hooked_pid
    _pending.after_fork_child()
    _sender.after_fork_child()
    _client.reset_lock()
    _hooked_pid = None


atexit.register(close_at_exit)
_client.on_new_client.append(on_new_client)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
