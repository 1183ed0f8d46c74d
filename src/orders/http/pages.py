"""The web pages: the live dashboard at ``/``, an order's page, and the API docs at ``/docs``.

Every asset is shipped in this package (``static/``, package data) and served by the service:
the pages make no request to any other host, and their Content-Security-Policy says so to the
browser. The pages are clients of the public HTTP API (see docs/dashboard.md).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from orders.http.service import OrderIdPath

__all__ = ["CONTENT_SECURITY_POLICY", "install_pages", "router"]

router = APIRouter(include_in_schema=False)

#: only this origin, for everything; the pages have no inline script or style
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Swagger UI starts itself from an inline script and styles some elements inline.
_DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
)
_SWAGGER = "/static/swagger-ui"


@cache
def _page(name: str) -> str:
    return files("orders.http").joinpath("static", name).read_text(encoding="utf-8")


def _html(name: str) -> HTMLResponse:
    return HTMLResponse(
        _page(name),
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/")
async def dashboard() -> HTMLResponse:
    """The live dashboard."""
    return _html("dashboard.html")


@router.get("/ui/orders/{order_id}")
async def order_page(order_id: OrderIdPath) -> HTMLResponse:
    """One order: its read model and its event stream, live."""
    return _html("order.html")


@router.get("/docs")
async def docs() -> HTMLResponse:
    """Swagger UI on the service's own copy of its assets."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Orders API",
        swagger_js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
        swagger_css_url=f"{_SWAGGER}/swagger-ui.css",
        swagger_favicon_url=f"{_SWAGGER}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = _DOCS_POLICY
    return page


def install_pages(api: FastAPI) -> None:
    """Add the pages and the static assets to ``api`` (built with ``docs_url=None``)."""
    api.include_router(router)
    api.mount(
        "/static",
        StaticFiles(directory=str(files("orders.http").joinpath("static"))),
        name="static",
    )
