"""The Orders service over HTTP: :func:`create_api` builds the ASGI app, and
:func:`orders.http.server.serve` runs it under uvicorn (``orders serve``)."""

from orders.http.api import create_api

__all__ = ["create_api"]
