"""Installing declared dependencies: real pip against the package index (a few tests only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecourt.errors import DependencyInstallFailed
from forecourt.plugins.dependencies import install_dependencies, pip_command, pip_environment


def test_pip_installs_wheels_only_into_the_target(tmp_path: Path) -> None:
    command = pip_command(["six==1.17.0"], tmp_path)
    assert "--only-binary=:all:" in command
    assert command[command.index("--target") + 1] == str(tmp_path)
    assert command[-1] == "six==1.17.0"


def test_pip_sees_no_server_secrets_but_keeps_index_and_proxy_settings() -> None:
    env = pip_environment(
        {
            "PATH": "/usr/bin",
            "FORECOURT_SECRET_KEY": "x",
            "FORECOURT_DATABASE_URL": "postgresql://u:p@db/x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "PIP_INDEX_URL": "https://mirror.example.com/simple",
            "HTTPS_PROXY": "http://proxy:3128",
        }
    )
    assert env == {
        "PATH": "/usr/bin",
        "PIP_INDEX_URL": "https://mirror.example.com/simple",
        "HTTPS_PROXY": "http://proxy:3128",
        "PYTHONNOUSERSITE": "1",
    }


async def test_nothing_to_install_runs_nothing(tmp_path: Path) -> None:
    await install_dependencies([], tmp_path / "deps")
    assert not (tmp_path / "deps").exists()


@pytest.mark.parametrize("requirement", ["six>=1", "--index-url=https://evil.example.com", "-e ."])
async def test_unpinned_or_option_like_requirements_never_reach_pip(
    tmp_path: Path, requirement: str
) -> None:
    with pytest.raises(DependencyInstallFailed):
        await install_dependencies([requirement], tmp_path / "deps")
    assert not (tmp_path / "deps").exists()


async def test_a_pinned_wheel_is_installed_into_the_plugin_folder(tmp_path: Path) -> None:
    target = tmp_path / "deps"
    await install_dependencies(["six==1.17.0"], target)
    assert (target / "six.py").is_file()
    assert any(path.name.startswith("six-1.17.0") for path in target.glob("*.dist-info"))


async def test_a_package_that_does_not_exist_fails_with_pips_reason(tmp_path: Path) -> None:
    with pytest.raises(DependencyInstallFailed) as caught:
        await install_dependencies(["forecourt-no-such-package==0.0.1"], tmp_path / "deps")
    assert "forecourt-no-such-package" in caught.value.detail
    assert "No matching distribution" in caught.value.extra["output"]


async def test_an_install_running_too_long_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(DependencyInstallFailed, match="took over"):
        await install_dependencies(["six==1.17.0"], tmp_path / "deps", timeout_s=0.05)
