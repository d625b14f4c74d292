"""The web console at /console: one server-rendered page whose scripts call the public HTTP API.

It holds no data of its own and has no route of its own into the services: everything it shows
comes from /v1 with the API key the person typed (kept in the browser's sessionStorage).
"""

from services.console.routes import install_console

__all__ = ["install_console"]
