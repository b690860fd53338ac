"""The task service: ``taskreport serve``. Needs the ``server`` extra (starlette and uvicorn).

::

    from taskreport.server import ServerSettings, create_app
    app = create_app(ServerSettings(store_url="/var/lib/taskreport/tasks.db"))  # any ASGI server runs it
    uvicorn.Server(uvicorn_config(app, port=8000)).run()      # as `taskreport serve` runs it
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"taskreport's server needs {exc.name}: pip install 'taskreport[server]'", name=exc.name) from exc

from ._app import TaskServer, create_app
from ._prefork import serve_forked
from ._protocol import uvicorn_config
from ._settings import RateLimit, ServerSettings, SmtpSettings

__all__ = ["RateLimit", "ServerSettings", "SmtpSettings", "TaskServer", "create_app", "serve_forked", "uvicorn_config"]
