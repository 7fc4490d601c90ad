"""A plugin's declared dependencies: each pinned to one version, installed in its own folder.

``pip install --target`` in a subprocess of the server's own interpreter, so the wheels match
the Python the sandbox runs. Choices, and why:

- ``--only-binary=:all:``: wheels only. Building a source distribution runs its build code on
  the server, outside the sandbox, at install time; a wheel is unpacked, never executed.
- Requirements must be pinned (``name==version``, checked again here); pip still resolves
  their own dependencies, so a plugin lists only what it imports.
- A clean environment: only ``PATH``, locale, temporary folder, ``HOME``, proxy, CA bundle and
  ``PIP_*`` variables pass, so the server's secrets never reach pip, while an installation's
  index mirror and proxy still apply.
- On failure, :class:`~forecourt.errors.DependencyInstallFailed` carries the last lines of pip's
  output (``detail`` and ``extra["output"]``). The caller owns ``target`` and removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from forecourt.errors import DependencyInstallFailed
from forecourt.plugins.configuration import Problem, problem

INSTALL_TIMEOUT_S = 300.0
OUTPUT_TAIL_LINES = 15
PASSED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
    }
)


def requirement_problem(text: str) -> str | None:
    """Why ``text`` is not a requirement pinned to one version (``name==1.2.3``), or None."""
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return f"not a requirement: {exc}"
    specifiers = list(requirement.specifier)
    if requirement.url:
        return "must name a package from the index, not a URL"
    if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
        return "must be pinned to one exact version: name==version"
    return None


def dependency_problems(dependencies: Any) -> list[Problem]:
    """Problems with the ``dependencies`` list: unpinned or repeated requirements."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, text in enumerate(dependencies if isinstance(dependencies, list) else []):
        if not isinstance(text, str):
            continue
        message = requirement_problem(text)
        if message is None:
            name = canonicalize_name(Requirement(text).name)
            message = f"{name} is listed more than once" if name in seen else None
            seen.add(name)
        if message:
            problems.append(problem(f"dependencies[{i}]", message))
    return problems


def pip_command(requirements: Sequence[str], target: Path) -> list[str]:
    """The pip command line :func:`install_dependencies` runs."""
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--target",
        str(target),
        *requirements,
    ]


def pip_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process's) that pip may see."""
    source = os.environ if environ is None else environ
    env = {
        key: value
        for key, value in source.items()
        if key in PASSED_ENV or (key.startswith("PIP_") and key != "PIP_REQUIRE_VIRTUALENV")
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


async def install_dependencies(
    requirements: Sequence[str], target: Path, *, timeout_s: float = INSTALL_TIMEOUT_S
) -> None:
    """Install pinned ``requirements`` (and what they need) as wheels into ``target``.

    Does nothing for an empty list. Raises DependencyInstallFailed when a requirement is not
    pinned, pip fails, or it runs longer than ``timeout_s``.
    """
    if not requirements:
        return
    for requirement in requirements:
        reason = requirement_problem(requirement)
        if reason:
            raise DependencyInstallFailed(f"{requirement!r} {reason}", output="")
    process = await asyncio.create_subprocess_exec(
        *pip_command(requirements, target),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=pip_environment(),
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise DependencyInstallFailed(
            f"Installing {', '.join(requirements)} took over {timeout_s:g} s", output=""
        ) from None
    if process.returncode != 0:
        tail = _tail(output.decode(errors="replace"))
        raise DependencyInstallFailed(
            f"pip could not install {', '.join(requirements)}:\n{tail}", output=tail
        )


def _tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-OUTPUT_TAIL_LINES:])
