"""The pytest plugin of taskreport (registered through the ``pytest11`` entry point).

It adds one fixture, ``taskreport_tasks``, and does nothing else: a test suite that never asks for the
fixture runs exactly as without the plugin (the library is not even imported for it). Where plugins are not
loaded automatically (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), add ``pytest_plugins = ["taskreport.pytest_plugin"]``
to a ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from taskreport.testing import TaskRecorder


@pytest.fixture
def taskreport_tasks() -> Iterator[TaskRecorder]:
    """The tasks this test reported, recorded in memory (see :func:`taskreport.testing.capture_tasks`).

    Fresh for each test; the process's client is put back afterwards. No thread, no network, no file: the
    test never touches a real store or server.
    """
    from taskreport.testing import capture_tasks

    with capture_tasks() as recorder:
        yield recorder
