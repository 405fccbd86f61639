"""Benchmarks: `python -m inception_train.bench --help` (models vs timm, the full trainer's data path, loaders)."""
