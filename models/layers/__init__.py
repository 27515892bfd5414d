"""Shared building blocks: text encoders, sequence encoders, attention blocks, estimators."""
