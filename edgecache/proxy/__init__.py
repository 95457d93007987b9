"""``edgecache proxy``: a caching reverse proxy (sidecar) on the same engine as the middleware."""

from edgecache.proxy.admin import AdminApp
from edgecache.proxy.app import Limits, ProxyApp, RequestGuard
from edgecache.proxy.server import ProxyServer, run
from edgecache.proxy.upstreams import HealthConfig, UpstreamPool

__all__ = [
    "AdminApp",
    "HealthConfig",
    "Limits",
    "ProxyApp",
    "ProxyServer",
    "RequestGuard",
    "UpstreamPool",
    "run",
]
