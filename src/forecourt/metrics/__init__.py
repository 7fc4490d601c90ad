"""The metrics store: time series written in batches, rolled up, pruned and queried."""
