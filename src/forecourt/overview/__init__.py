"""The overview of a tenant: its summary, its plugins' health and categories, cached."""
