"""The dashboard: live progress in a browser, served by ``taskreport serve`` at ``/`` beside the API.

Server-rendered pages (Jinja2), live updates over Server-Sent Events from one "changed since" poll per server
process, sign-in with the accounts ``serve`` and ``admin`` make, and a public read-only page per task behind
an unguessable link. Everything it needs ships in the package: no CDN, no build step.
"""

from __future__ import annotations

from ._app import Dashboard, dashboard_mount
from ._feed import ChangeFeed, Listener

__all__ = ["ChangeFeed", "Dashboard", "Listener", "dashboard_mount"]
