"""Alerts (triggered by the API, the host app or alert rules) and the rules that watch metrics."""
