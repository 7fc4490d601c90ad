"""Rate limiting: sliding-window counters kept in memory or in Redis."""
