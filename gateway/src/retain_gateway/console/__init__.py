"""The operator console: a static single-page app served at /console (every asset local, no CDN).

It logs in with a pasted API key (kept in sessionStorage) and reads the same REST API as any client.
"""

from __future__ import annotations

from retain_gateway.console.router import router

__all__ = ["router"]
