"""edgecache: an RFC 9111 HTTP cache for ASGI apps."""

from edgecache.config import ConfigError, Settings
from edgecache.core.status import Outcome, Reason
from edgecache.engine import Cache
from edgecache.middleware import CacheInterceptor

__version__ = "0.1.0"

__all__ = [
    "Cache",
    "CacheInterceptor",
    "ConfigError",
    "Outcome",
    "Reason",
    "Settings",
    "__version__",
]
