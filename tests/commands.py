"""The ``forecourt`` command run as a subprocess, the way an operator runs it.

``run`` runs one command to completion; ``Cli`` is the same bound to a test's environment and
folder (the cwd, so that no ``.env`` file of the checkout is read); ``clean_env`` is the
caller's environment without any ``FORECOURT_`` setting; ``assert_clean_error`` checks a
usage error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FORECOURT = Path(sys.executable).parent / "forecourt"
COMMAND_TIMEOUT_S = 60.0


def clean_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The caller's environment without any FORECOURT_ setting, plus a data folder and
    ``settings`` (``database_url="…"`` becomes ``FORECOURT_DATABASE_URL``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORECOURT_")}
    env["FORECOURT_DATA_DIR"] = str(data_dir)
    env.update({f"FORECOURT_{name.upper()}": value for name, value in settings.items()})
    return env


def run(
    env: dict[str, str], cwd: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``forecourt ARGS`` to completion."""
    return subprocess.run(
        [str(FORECOURT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


@dataclass
class Cli:
    """Runs ``forecourt`` with this test's environment; keyword arguments add variables."""

    env: dict[str, str]
    cwd: Path

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FORECOURT_DATA_DIR"])

    def __call__(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return run({**self.env, **env}, self.cwd, *args, stdin=stdin)

    def ok(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        result = self(*args, stdin=stdin, **env)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A usage error: the exit code, one ``error:`` line on stderr, nothing on stdout."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]
