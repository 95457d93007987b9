"""``edgecache proxy`` with httpx's own transport (httpcore's pool) in place of ``EdgeTransport``: the
"before" of the miss path in ``benchmarks/proxy_vs_nginx.py --transport httpx|both``.

Run as ``python -m benchmarks.proxy_httpx_transport proxy --upstream …`` (the ``edgecache`` command line).
The transport is built as ProxyApp built its client before EdgeTransport: ``max_connections`` and 100
keep-alive connections.
"""

from __future__ import annotations

import sys

import httpx

from edgecache import cli
from edgecache.proxy import app as proxy_app


def httpx_transport(*, max_connections: int, max_idle: int) -> httpx.AsyncBaseTransport:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_idle)
    return httpx.AsyncHTTPTransport(limits=limits)


if __name__ == "__main__":
    proxy_app.EdgeTransport = httpx_transport  # type: ignore[attr-defined, assignment]
    sys.exit(cli.main())
