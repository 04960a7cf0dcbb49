"""Fit a model to a labelled folder (needs torch): recipe, checkpoints, reports."""
