"""Bundled example models, trained on first use and cached."""
