"""Tenants: every resource belongs to exactly one."""
