"""The dashboard's build, as the tests need it: made by `make test` (npm ci + npm run build)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from forecourt.dashboard.site import DIST_DIR

# The JavaScript the first screen loads (the entry chunk), gzip-compressed.
ENTRY_BUDGET_BYTES = 100 * 1024
_ENTRY = re.compile(r'<script type="module"[^>]*\bsrc="/static/([^"]+\.js)"')


def index_html() -> str:
    """The built index.html; the test fails, naming how to build it, when there is none."""
    index = DIST_DIR / "index.html"
    if not index.is_file():
        pytest.fail(
            f"the dashboard is not built ({index} is missing): run `make web` "
            "(or `cd web && npm ci && npm run build`)",
            pytrace=False,
        )
    return index.read_text()


def entry_script() -> Path:
    found = _ENTRY.search(index_html())
    assert found, "index.html loads no module script from /static"
    return DIST_DIR / "static" / found.group(1)


def gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=9))
