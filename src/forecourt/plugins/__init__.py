"""Plugins: third-party code installed from a package, configured per tenant, run in a sandbox.

A package (``package.py``) is a zip or a folder with a manifest (``manifest.py``) at its root,
optionally signed by its publisher (``integrity.py``). Each plugin type has an input and an
output contract (``contracts.py``); each instance has a configuration checked against the
plugin's ``config_schema`` with its secrets sealed at rest (``configuration.py``); declared
dependencies are installed into the plugin's own folder (``dependencies.py``). The packages
shipped with Forecourt live in ``builtin/``.
"""
