"""The plugin packages shipped with Forecourt, one development folder each.

Each folder is an ordinary package (manifest plus code) read with
:func:`forecourt.plugins.package.read_package`; the code runs in the sandbox like any other
plugin, against the host module ``forecourt_plugin``.
"""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR = Path(__file__).resolve().parent


def builtin_package_dirs() -> list[Path]:
    """The folders of the built-in packages, sorted by name."""
    return sorted(
        path
        for path in BUILTIN_DIR.iterdir()
        if path.is_dir() and (path / "forecourt-plugin.toml").is_file()
    )
