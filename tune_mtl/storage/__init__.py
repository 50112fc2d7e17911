"""The run folder on disk (what a search writes and a report reads) and secret masking of storage URLs."""
