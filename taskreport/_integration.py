"""The integration framework: what every integration (Celery, logging, OpenTelemetry) is built on.

An integration is an object passed to ``taskreport.init(integrations=[...])``. Its class's
:meth:`Integration.setup_once` installs the framework hooks once per process, however often ``init()`` runs;
the hooks then ask the current client for its instance (``taskreport.get_client().integration(cls)``) and
do nothing when there is none or reporting is off. A framework that is missing or too old raises
:class:`DidNotEnable` naming it and the version needed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import ClassVar

from ._errors import ConfigurationError

_installed: set[str] = set()
_lock = threading.Lock()


class DidNotEnable(ConfigurationError):
    """An integration can't be enabled here: its framework is missing or older than it needs."""


class Integration:
    """Base class of integrations. Subclasses set :attr:`identifier` and implement :meth:`setup_once`."""

    #: unique name of the integration (``"celery"``, ``"logging"``)
    identifier: ClassVar[str] = ""

    @staticmethod
    def setup_once() -> None:
        """Install the framework hooks. Runs once per process, the first time a client with this
        integration is made; raise :class:`DidNotEnable` if the framework can't be hooked."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def require(module: str, minimum: str, *, package: str | None = None, integration: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`DidNotEnable` saying what to install."""
    import importlib.metadata

    dist = package or module
    who = f"the {integration} integration" if integration else "this integration"
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise DidNotEnable(f"{who} needs {dist} >= {minimum}, which is not installed "
                           f"(pip install '{dist}>={minimum}')") from None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(imported, "__version__", "0"))
    if _version_tuple(version) < _version_tuple(minimum):
        raise DidNotEnable(f"{who} needs {dist} >= {minimum}; {version} is installed")
    return imported


def setup(integrations: Iterable[Integration]) -> dict[str, Integration]:
    """Check and install ``integrations``; returns them by identifier. Each class's hooks are installed once
    per process. Raises :class:`DidNotEnable` (nothing is installed for that integration)."""
    chosen: dict[str, Integration] = {}
    for integration in integrations:
        if not isinstance(integration, Integration):
            raise ConfigurationError(f"not an integration: {integration!r} (pass instances, e.g. "
                                     "CeleryIntegration())")
        kind = type(integration)
        identifier = kind.identifier or kind.__qualname__
        with _lock:
            if identifier not in _installed:
                kind.setup_once()
                _installed.add(identifier)
        chosen[identifier] = integration
    return chosen
