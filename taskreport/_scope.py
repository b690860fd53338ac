"""``with scope(data=..., tags=...)``: fields for every task created inside a block.

The fields live in a contextvar, so they follow the code into asyncio tasks and into threads started with a
copied context, and concurrent requests in one process do not see each other's scope.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from ._context import scope_fields
from ._errors import ValidationError
from ._validation import check_json, validate_task_field


class scope:  # lower case: used like a function, ``with taskreport.scope(tags={...})``
    """Add ``data`` and ``tags`` to every task created inside the block (sync or async ``with``).

    Nested scopes merge, the inner one winning on a shared key; fields given to the task itself win over
    both. Invalid data or tags raise :class:`~taskreport.ValidationError` here, not when a task is created.
    """

    __slots__ = ("_data", "_tags", "_tokens")

    def __init__(self, data: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> None:
        if data is not None:
            if not isinstance(data, Mapping):
                raise ValidationError("must be a mapping: a scope's data merges into each task's data.", attr="data")
            check_json("data", dict(data))
        self._data: dict[str, Any] = dict(data or {})
        self._tags: dict[str, str] = validate_task_field("tags", tags) if tags is not None else {}
        self._tokens: list[contextvars.Token[tuple[dict[str, Any], dict[str, str]] | None]] = []

    def __repr__(self) -> str:
        return f"<taskreport.scope data={self._data!r} tags={self._tags!r}>"

    def __enter__(self) -> scope:
        outer = scope_fields.get()
        merged = (self._data, self._tags) if outer is None else ({**outer[0], **self._data}, {**outer[1], **self._tags})
        self._tokens.append(scope_fields.set(merged))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        token = self._tokens.pop()
        # exited in another context than it was entered in (a generator finalised elsewhere): leave it be
        with contextlib.suppress(ValueError, RuntimeError):
            scope_fields.reset(token)

    async def __aenter__(self) -> scope:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)
