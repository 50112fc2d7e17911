"""The bottom layer: errors, plug-in registries, typed options, shared result keys, metrics.

Everything above may import it; it imports nothing of tune_mtl's above it.
"""
