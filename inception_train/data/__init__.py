"""Data: the Inception preprocessing, the torch and synthetic loaders, the embedded demo dataset."""
