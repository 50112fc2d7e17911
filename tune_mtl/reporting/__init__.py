"""Summaries, tables and plots of a run folder. Reads results; never imports the trainable or Ray Tune."""
