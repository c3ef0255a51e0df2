"""ferry: source to a server with zero downtime."""

__version__ = "0.1.0"
