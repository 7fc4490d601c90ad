"""What this installation accepts from a package: resources within its caps, and a signature
from a publisher it trusts (or none, when it allows unsigned packages)."""

from __future__ import annotations

from forecourt.errors import InvalidPackage
from forecourt.plugins.integrity import Trust, verify_package
from forecourt.plugins.manifest import check_resources
from forecourt.plugins.package import PluginPackage
from forecourt.settings import Settings


def caps(settings: Settings) -> dict[str, float | None]:
    """The most a manifest's ``resources`` may ask for here."""
    return {
        "timeout_s": settings.plugin_max_timeout_s,
        "cpu_s": settings.plugin_max_cpu_s,
        "memory_mib": settings.plugin_max_memory_mib,
        "file_mib": settings.plugin_max_file_mib,
        "open_files": settings.plugin_max_open_files,
    }


def check_package(package: PluginPackage, settings: Settings) -> Trust:
    """The installation's policies: resource caps (InvalidPackage), signatures (Untrusted)."""
    problems = check_resources(package.manifest, caps(settings))
    if problems:
        raise InvalidPackage(
            "The package asks for more than this installation allows", errors=problems
        )
    return verify_package(
        package, settings.plugin_trusted_keys, allow_unsigned=settings.plugin_allow_unsigned
    )
