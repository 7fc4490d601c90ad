"""``python -m bench``: every benchmark module in this folder, one after the other.

``python -m bench.NAME`` runs one. A module with a ``main()`` is called; any other is run as
``__main__``. A module whose dependencies are missing is skipped with a line saying so.
"""

from __future__ import annotations

import importlib
import pkgutil
import runpy
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def modules() -> list[str]:
    """The bench modules, by name; helpers (a leading underscore) are not benchmarks."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(BENCH_DIR)])
        if not info.name.startswith("_") and not info.ispkg
    )


def run(name: str) -> None:
    qualified = f"{__package__ or 'bench'}.{name}"
    try:
        module = importlib.import_module(qualified)
    except ImportError as exc:
        print(f"== {name}: skipped ({exc})", flush=True)
        return
    print(f"== {name}", flush=True)
    started = time.perf_counter()
    entry = getattr(module, "main", None)
    if callable(entry):
        entry()
    else:
        runpy.run_module(qualified, run_name="__main__")
    print(f"== {name}: {time.perf_counter() - started:.1f} s", flush=True)


def main() -> None:
    # The modules parse sys.argv themselves; they get none of ours.
    del sys.argv[1:]
    for name in modules():
        run(name)


if __name__ == "__main__":
    main()
