"""``edgecache proxy``: a caching reverse proxy (sidecar) on the same engine as the middleware."""

from edgecache.proxy.admin import AdminApp, UpstreamProbe
from edgecache.proxy.app import Limits, ProxyApp, RequestGuard
from edgecache.proxy.server import ProxyServer, run

__all__ = ["AdminApp", "Limits", "ProxyApp", "ProxyServer", "RequestGuard", "UpstreamProbe", "run"]
