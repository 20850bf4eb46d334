"""Providers submit rendered jobs to infrastructure. See `base.py`; each backend lives in its own module."""
