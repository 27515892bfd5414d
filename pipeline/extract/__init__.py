"""Extraction: media decode, per-clip stages, the content-addressed cache, the runner, assembly."""
