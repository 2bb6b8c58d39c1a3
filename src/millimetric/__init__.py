"""millimetric: self-hostable, privacy-respecting analytics implementing the Millimetric v1 API."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """`from millimetric import Client, AsyncClient`, imported on first use: the server never
    loads the SDK, and the SDK never loads the server."""
    if name in ("Client", "AsyncClient"):
        from millimetric import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'millimetric' has no attribute {name!r}")
