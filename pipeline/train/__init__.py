"""Training: feature files, the torch loader, the one trainer, metrics, bundles, multi-seed runs."""
