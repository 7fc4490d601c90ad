"""API keys: format, storage as hashes, scopes, rotation, usage."""
