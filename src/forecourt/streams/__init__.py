"""Live streams, the service side: the hub that producers publish to and subscribers join,
the channels and their scopes, and the replay log that lets a client resume.

Transports (``forecourt.realtime``: WebSocket and SSE) call into this package; nothing here
imports a transport. See docs/streams.md.
"""
