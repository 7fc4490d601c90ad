"""Outgoing webhooks: endpoints, signed durable deliveries, attempts, SSRF guard."""
