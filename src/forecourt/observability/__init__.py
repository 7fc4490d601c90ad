"""What Forecourt tells about itself: Prometheus metrics (``registry``, ``instruments``,
``connections``, ``multiprocess``, ``backlog``), operation statistics over sliding windows
(``operations``) and the recent log records (``logring``), with their routes (``routes``)."""
