"""schedd: a self-hosted scheduled-actions daemon."""

__version__ = "0.1.0"
