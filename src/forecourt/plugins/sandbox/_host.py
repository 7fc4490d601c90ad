"""The worker's entry script, run as ``python -I -S -B _host.py FORECOURT_DIR API_DIR IN OUT``.

``FORECOURT_DIR`` is the directory of the ``forecourt`` package, ``API_DIR`` the one holding
``forecourt_plugin``; ``IN`` and ``OUT`` are the call pipe's file descriptors. The parent
packages are registered as empty shells, so importing the sandbox's worker-side modules runs
no package ``__init__`` and loads nothing of Forecourt's server (no settings, no database).
Neither directory stays on ``sys.path``: plugin code imports only the standard library, its
package and its declared dependencies.
"""

from __future__ import annotations

import os
import sys
import types


def main() -> int:
    """Start the worker; its exit status."""
    forecourt_dir, api_dir, control_in, control_out = sys.argv[1:5]
    here = os.path.dirname(os.path.abspath(__file__))
    shells = {
        "forecourt": forecourt_dir,
        "forecourt.plugins": os.path.join(forecourt_dir, "plugins"),
        "forecourt.plugins.sandbox": here,
    }
    for name, path in shells.items():
        shell = types.ModuleType(name)
        shell.__path__ = [path]
        sys.modules[name] = shell
    sys.path.insert(0, api_dir)
    try:
        from forecourt.plugins.sandbox import worker
    finally:
        sys.path.remove(api_dir)
    return worker.serve(int(control_in), int(control_out))


if __name__ == "__main__":
    sys.exit(main())
