"""GET /console (the page shell) and /console/static (its scripts, styles and vendored Alpine.js)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")

# Everything the page loads comes from this origin: a stray CDN link is blocked by the browser, not
# only by review. Alpine.js evaluates its attribute expressions with Function(), hence 'unsafe-eval'.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ]
)

router = APIRouter(include_in_schema=False)


@router.get("/console", response_class=HTMLResponse)
def console(request: Request) -> Response:
    """The console's single page; its screens are routed in the browser (#/collections, #/search...)."""
    root = request.scope.get("root_path", "").rstrip("/")
    response = TEMPLATES.TemplateResponse(
        request,
        "console.html",
        {"root": root, "static": f"{root}/console/static", "version": request.app.version},
    )
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response


@router.get("/")
def root(request: Request) -> RedirectResponse:
    """A person who opens the bare address lands on the console."""
    return RedirectResponse(f"{request.scope.get('root_path', '').rstrip('/')}/console", status_code=307)


def install_console(app: FastAPI) -> None:
    """Add /console, its static files and the redirect from / to `app`."""
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(router)
