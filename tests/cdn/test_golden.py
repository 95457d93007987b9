"""Golden files: real-world-shaped pages, style sheets and API answers, and what each must become.

``tests/cdn/golden/NAME.EXT`` is the input, ``NAME.expected.EXT`` the reviewed output. After a deliberate
change, rewrite the expected files with ``EDGECACHE_UPDATE_GOLDEN=1 pytest tests/cdn/test_golden.py`` and
review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgecache.cdn import AssetRewriter, CdnConfig

GOLDEN = Path(__file__).parent / "golden"
CONFIG = CdnConfig(
    origin="https://cdn.example.com",
    paths=("/static/", "/avatars/", "/media/portfolio/"),
    public_hosts=("www.example.com",),
    version="42",
)
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css", ".json": "application/json"}
INPUTS = sorted(p for p in GOLDEN.iterdir() if ".expected." not in p.name)


@pytest.mark.parametrize("source", INPUTS, ids=[p.name for p in INPUTS])
def test_golden(source: Path) -> None:
    expected_path = source.with_name(f"{source.stem}.expected{source.suffix}")
    body = source.read_bytes()
    out = AssetRewriter(CONFIG).rewrite_body(MEDIA_TYPES[source.suffix], body)
    assert out is not None, "every golden input holds asset URLs"
    if os.environ.get("EDGECACHE_UPDATE_GOLDEN") == "1":
        expected_path.write_bytes(out)
    assert out == expected_path.read_bytes()


def test_golden_inputs_exist() -> None:
    # a renamed directory must not turn the golden test into a test of nothing
    assert {p.suffix for p in INPUTS} == set(MEDIA_TYPES)
    assert len(INPUTS) >= 6


def test_huge_attributes_and_many_candidates() -> None:
    data_uri = "data:image/png;base64," + "QUJD" * 250_000  # a 1 MB inline image
    candidates = ", ".join(f"/static/img/{i}.png {i + 1}w" for i in range(2_000))
    classes = " ".join(f"c{i}" for i in range(20_000))
    body = (
        f'<img src="{data_uri}" class="{classes}" srcset="{candidates}">'
        f'<img title="{"/static/x.png " * 10_000}" src="/static/after.png">'
    ).encode()
    out = AssetRewriter(CONFIG).rewrite_body("text/html", body)
    assert out is not None
    assert out.count(b"https://cdn.example.com/static/") == 2_001
    assert out.replace(b"https://cdn.example.com", b"").replace(b"?v=42", b"") == body
