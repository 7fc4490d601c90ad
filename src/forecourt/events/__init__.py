"""Events: publish once, stored as CloudEvents, fanned out to webhook endpoints."""
