"""Options: which Celery tasks are tracked, and with what fields."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from celery import Task as CeleryTask

from ..._errors import ValidationError
from ..._ratelog import RateLimitedLog
from ..._refs import REF_PATTERN
from ..._validation import validate_task
from .. import Integration

logger = logging.getLogger("taskreport")

_log = RateLimitedLog()

#: the message header that carries what the worker needs to know of the record
HEADER = "taskreport"

#: Celery's own tasks (chord_unlock, backend_cleanup, ...) are never tracked automatically
DEFAULT_EXCLUDES = ("celery.*",)

#: fields a task's own ``taskreport={...}`` may set, besides ``heartbeat`` and ``record_args``
TASK_FIELDS = ("name", "value_max", "data", "tags", "max_runtime", "stale_timeout", "value")

Redactor = Callable[[str, tuple[Any, ...], dict[str, Any]], "tuple[Iterable[Any], Mapping[str, Any]] | None"]

def ref_for(celery_id: str) -> str:
    """The task reference of a Celery task id: the same in every process, derived from the id alone."""
    ref = f"celery-{celery_id}"
    if REF_PATTERN.fullmatch(ref):
        return ref
    return "celery-" + hashlib.sha256(celery_id.encode("utf-8", "surrogatepass")).hexdigest()[:48]

# -- options ---------------------------------------------------------------------------------------------
def _patterns(value: Any, attr: str) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    if isinstance(value, (str, re.Pattern)):
        value = [value]
    out = []
    for item in value:
        if isinstance(item, re.Pattern):
            out.append(item)
        elif isinstance(item, str):
            out.append(re.compile(fnmatch.translate(item)))
        else:
            raise ValidationError(f"must be task name patterns (strings or compiled regexes), not {item!r}.",
                                  attr=attr)
    return tuple(out)

def _seconds(value: Any, attr: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 2**30:
        raise ValidationError(f"must be a positive number of seconds, not {value!r}.", attr=attr)
    return float(value)

def _registered_task(name: str) -> Any:
    try:
        from celery import current_app

        return current_app.tasks.get(name)
    except Exception:
        return None

class CeleryIntegration(Integration):
    """Report Celery tasks.

    - ``auto_track``: track every task (except Celery's own ``celery.*`` ones), narrowed by ``includes`` and
      ``excludes``: task name patterns, shell-style strings (``"billing.*"``) or compiled regexes. Tasks
      that opt in with ``@app.task(taskreport=True)`` (or ``taskreport={...}``, or the :class:`TrackedTask`
      base) are tracked whatever the patterns say; ``taskreport=False`` opts a task out.
    - ``record_args``: put the task's arguments in its data (``args``, ``kwargs``), as JSON, at most
      ``max_args_size`` characters in all (longer ones are cut and kept as text). ``redact_args(name, args,
      kwargs)`` may return the ``(args, kwargs)`` to record instead, or None to record none.
    - ``heartbeat``: seconds between touches while a task runs; the task's ``stale_timeout`` becomes twice
      that, so the service marks a task whose worker died ``stale``.
    - ``stock_id_timeout``: against a service without task references (or while that is not known yet), a
      task is found by its id only; a retry waits at most this long for the id of its own task, and a
      publication from inside a task for the id of its parent, if that id is not known yet (5 s by default).
    """

    identifier = "celery"

    def __init__(
        self,
        *,
        auto_track: bool = False,
        includes: Iterable[str | re.Pattern[str]] | str | None = None,
        excludes: Iterable[str | re.Pattern[str]] | str | None = None,
        record_args: bool = False,
        max_args_size: int = 1024,
        redact_args: Redactor | None = None,
        heartbeat: float | None = None,
        stock_id_timeout: float = 5.0,
    ) -> None:
        if not isinstance(auto_track, bool):
            raise ValidationError(f"must be True or False, not {auto_track!r}.", attr="auto_track")
        if not isinstance(record_args, bool):
            raise ValidationError(f"must be True or False, not {record_args!r}.", attr="record_args")
        if isinstance(max_args_size, bool) or not isinstance(max_args_size, int) or max_args_size < 16:
            raise ValidationError(f"must be a number of characters (16 or more), not {max_args_size!r}.",
                                  attr="max_args_size")
        if redact_args is not None and not callable(redact_args):
            raise ValidationError("must be a function (name, args, kwargs) -> (args, kwargs) or None.",
                                  attr="redact_args")
        self.auto_track = auto_track
        self.includes = _patterns(includes, "includes")
        self.excludes = _patterns(DEFAULT_EXCLUDES, "excludes") + _patterns(excludes, "excludes")
        self.record_args = record_args
        self.max_args_size = max_args_size
        self.redact_args = redact_args
        self.heartbeat = _seconds(heartbeat, "heartbeat")
        self.stock_id_timeout = _seconds(stock_id_timeout, "stock_id_timeout") or 5.0
        #: per task name: the task's own options (None: not tracked); computed once
        self._decisions: dict[str, _Options | None] = {}
        self.probe_started = False

    def __repr__(self) -> str:
        return f"<CeleryIntegration auto_track={self.auto_track}>"

    @staticmethod
    def setup_once() -> None:
        from . import _connect  # the hooks live in the modules that import this one

        _connect()

    # -- which tasks, with what ---------------------------------------------------------------------
    def options_for(self, name: str, task: Any = None) -> _Options | None:
        """The options a task is tracked with, or None if it is not tracked."""
        try:
            return self._decisions[name]
        except KeyError:
            pass
        if task is None:
            task = _registered_task(name)
        decision = self._decide(name, task)
        self._decisions[name] = decision
        return decision

    def _decide(self, name: str, task: Any) -> _Options | None:
        own = getattr(task, "taskreport", None) if task is not None else None
        if own is False:
            return None
        if own is None or own is True:
            if own is None and not self._auto(name):
                return None
            return _Options(self, name, {})
        if not isinstance(own, Mapping):
            _log.log(logging.ERROR, f"celery-options:{name}",
                     "taskreport: task %s: taskreport= must be True, False or a dict of task fields, not %r; "
                     "tracking it with the defaults", name, own)
            return _Options(self, name, {})
        return _Options(self, name, own)

    def _auto(self, name: str) -> bool:
        if not self.auto_track:
            return False
        if self.includes and not any(p.fullmatch(name) for p in self.includes):
            return False
        return not any(p.fullmatch(name) for p in self.excludes)

    def recorded_args(self, name: str, options: _Options, args: Any, kwargs: Any) -> dict[str, Any]:
        """``{"args": ..., "kwargs": ...}`` for the task's data, bounded and redacted; {} when off."""
        if not options.record_args:
            return {}
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        if self.redact_args is not None:
            try:
                redacted = self.redact_args(name, args, kwargs)
            except Exception as exc:
                _log.log(logging.ERROR, f"celery-redact:{name}",
                         "taskreport: redact_args raised %s: %s; no arguments recorded for %s",
                         type(exc).__name__, exc, name)
                return {}
            if redacted is None:
                return {}
            args, kwargs = tuple(redacted[0]), dict(redacted[1])
        return _bounded({"args": list(args), "kwargs": kwargs}, self.max_args_size)

class _Options:
    """How one Celery task is tracked: the integration's options with the task's own on top."""

    __slots__ = ("fields", "heartbeat", "record_args")

    def __init__(self, integration: CeleryIntegration, name: str, own: Mapping[str, Any]) -> None:
        own = dict(own)
        heartbeat = own.pop("heartbeat", integration.heartbeat)
        record_args = own.pop("record_args", integration.record_args)
        fields = {k: v for k, v in own.items() if k in TASK_FIELDS}
        try:
            self.heartbeat = _seconds(heartbeat, "heartbeat")
            for key in own:
                if key not in TASK_FIELDS:
                    raise ValidationError(f"is not a task field this integration sets (one of "
                                          f"{', '.join((*TASK_FIELDS, 'heartbeat', 'record_args'))}).", attr=key)
            fields = validate_task({"name": name, **fields}, partial=False)
        except ValidationError as exc:
            _log.log(logging.ERROR, f"celery-options:{name}",
                     "taskreport: task %s: ignoring its taskreport options: %s", name, exc)
            self.heartbeat, fields = integration.heartbeat, {"name": name}
        self.record_args = bool(record_args)
        if self.heartbeat is not None and "stale_timeout" not in fields:
            fields["stale_timeout"] = max(1, round(self.heartbeat * 2))
        self.fields = fields

def _bounded(value: dict[str, Any], limit: int) -> dict[str, Any]:
    """``value`` as JSON values, or each part cut to text when the whole is over ``limit`` characters."""
    out: dict[str, Any] = {}
    texts = {}
    for key, part in value.items():
        try:
            texts[key] = json.dumps(part, default=repr, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            texts[key] = json.dumps(repr(part), ensure_ascii=False)
    if sum(len(t) for t in texts.values()) <= limit:
        for key, text in texts.items():
            out[key] = json.loads(text)
        return out
    share = max(8, limit // max(1, len(texts)))
    for key, text in texts.items():
        out[key] = text if len(text) <= share else text[: share - 1] + "…"
    return out

class TrackedTask(CeleryTask):  # type: ignore[misc]
    """A Celery task base that opts in to tracking: ``@app.task(base=TrackedTask)``. Subclass it and set
    ``taskreport = {...}`` for per-task fields (``tags``, ``max_runtime``, ``heartbeat``, ...)."""

    abstract = True
    taskreport: bool | Mapping[str, Any] = True
