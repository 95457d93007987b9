"""CDN asset URL rewriting: asset URLs in HTML, CSS, JSON and ``Link`` headers moved to a CDN origin."""

from .rewriter import AssetRewriter
from .urls import CdnConfig

__all__ = ["AssetRewriter", "CdnConfig"]
