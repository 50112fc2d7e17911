"""The search service: the YAML spec, Ray Tune experiments driven by Optuna studies, cluster set-up, tracking.

The top layer under the CLI: it may import every layer below it.
"""
