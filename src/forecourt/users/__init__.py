"""Dashboard users: argon2id passwords, roles, cookie sessions with CSRF tokens."""
