"""Live streams, the transports: WebSocket at ``/ws`` and Server-Sent Events at
``/api/v1/stream``. Both call ``forecourt.streams`` (the hub); see docs/streams.md."""
