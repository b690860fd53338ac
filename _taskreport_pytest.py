"""The pytest plugin of taskreport: the ``taskreport_tasks`` fixture, and nothing else.

Registered through the ``pytest11`` entry point, so every test suite of an environment with taskreport installed
loads it. It lives outside the ``taskreport`` package (as hypothesis' plugin does) so that loading it imports
nothing: a suite that never asks for the fixture runs exactly as it would without the plugin. Where plugins are
not loaded automatically (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), ``pytest -p _taskreport_pytest`` or
``pytest_plugins = ["_taskreport_pytest"]`` in a ``conftest.py`` loads it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from taskreport.testing import TaskRecorder


@pytest.fixture
def taskreport_tasks() -> Iterator[TaskRecorder]:
    """The tasks this test reported, recorded in memory (see ``taskreport.testing.capture_tasks``).

    Fresh for each test; the process's client is put back afterwards. No thread, no network, no file: the test
    never touches a real store or server.
    """
    from taskreport.testing import capture_tasks

    with capture_tasks() as recorder:
        yield recorder
