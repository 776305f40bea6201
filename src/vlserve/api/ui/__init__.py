"""The web UI: a static page (vanilla JS modules, no build step) that drives the same HTTP API as the CLI.

`router` serves it at /ui and redirects / there; the page itself holds no data, it asks the API for everything.
"""

from vlserve.api.ui.router import router

__all__ = ["router"]
