"""Model files on disk: resolve a spec to a local folder (user path, or a verified download from Hugging Face or
ModelScope into VLSERVE_HOME/cache), and list or remove what the cache holds.

The hub clients are imported only when a download starts, so importing this package is cheap.
"""

from vlserve.hub.cache import CachedModel, list_cached, remove_cached
from vlserve.hub.fetch import choose_hub, ensure_local, fetch, local_model_path
from vlserve.hub.progress import ProgressCallback

__all__ = [
    "CachedModel",
    "ProgressCallback",
    "choose_hub",
    "ensure_local",
    "fetch",
    "list_cached",
    "local_model_path",
    "remove_cached",
]
