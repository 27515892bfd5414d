"""Serving a bundle: predict, label.csv evaluation, plots, the demo."""
