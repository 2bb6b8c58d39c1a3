"""millimetric: self-hostable, privacy-respecting analytics implementing the Millimetric v1 API."""

__version__ = "0.1.0"
