"""The web UI under /ui: server-rendered pages whose every change goes through /api/v1.

Pages read the database through the same helpers the REST API answers with (so a page and
``GET /api/v1/...`` never disagree) and change nothing themselves: buttons and forms call
the JSON API from the browser with the session cookie and its CSRF token. Only signing in
and out are form posts handled here.

Extending it (the flow builder lives in ``connector/ui/builder.py``, ``templates/ui/
builder.html`` and ``static/builder.js``):

- Views: add routes to the ``ui`` blueprint and wrap them in :func:`signed_in` (or
  ``signed_in("write")`` for pages only writers may open). ``g.principal`` is who is signed
  in and ``g.csrf`` their session's CSRF token. Import the module at the bottom of this
  file. The flows pages already link to ``/ui/flows/new`` and
  ``/ui/flows/<name>/edit`` for writers.
- Templates extend ``ui/base.html``, which offers these blocks: ``title`` (the <title>;
  " · connector" is appended), ``head`` (extra ``<link>`` or ``<script defer>`` tags),
  ``header`` (the page's head row; by default it holds ``breadcrumb``, ``heading`` (the
  <h1>) and ``actions`` (buttons on the right)), ``content`` (the page) and ``scripts``
  (scripts at the end of <body>). Set ``{% set active_page = "flows" %}`` at the top to
  mark the current nav item (flows, runs, connections, catalog), and ``{% set refresh = 3
  %}`` to reload the page every 3 s while something is in progress. ``{% set ctx =
  ui_context() %}`` gives ``ctx.principal``, ``ctx.can_write`` and ``ctx.csrf_token``.
  ``ui/macros.html`` has ``field(...)`` (a labelled input with its error slot),
  ``schema_field(...)`` (an input described by the catalog: text, password for secrets,
  number, checkbox or a select of choices), ``status(...)`` and ``flow_state(...)``
  (badges), ``json_block(...)`` and ``pager(...)``; ``component_label(key)`` names a
  trigger, action or search.
  The Content-Security-Policy allows scripts and styles from /ui/static only: no inline
  <script> or style="..."; pass data to scripts in ``<script type="application/json">``
  blocks or data-* attributes.
- JavaScript (``static/ui.js``, loaded on every page) exposes ``window.connector``:
  ``api(method, path, body)`` calls ``/api/v1`` + path with the CSRF header, returns the
  parsed JSON (null for 204) or throws an ``ApiError`` {status, code, message, details}
  whose ``details`` maps a field path (``credentials.api_key``, ``steps[0].inputs.x``) to
  messages; ``showErrors(form, err)`` puts each message beside the element whose
  ``data-error-for`` names that path (the rest in the form's ``.form-error``);
  ``clearErrors(form)``; ``readForm(form)`` builds a nested object from inputs named with
  dotted paths; ``flash(message, kind)`` shows a notice that survives one reload;
  ``busy(button, promise)`` disables a button while a call runs. ``window.api`` is
  ``connector.api``. ui.js also wires ``<button data-call="POST" data-path="/flows/x/resume"
  data-confirm="..." data-done="...">`` (call, flash, reload); forms it does not know are
  left to their own scripts.
"""
from __future__ import annotations

import datetime as dt
import json
from functools import wraps

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from .. import auth
from ..errors import NotFound, UserError

ui = Blueprint("ui", __name__, static_folder="static", static_url_path="/ui/static",
               template_folder="templates")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def is_ui_request() -> bool:
    """Return True when the current request is for a UI page (answer HTML, not JSON)."""
    return request.path == "/" or request.path == "/ui" or request.path.startswith("/ui/")


def current_session() -> tuple[auth.Principal, str] | None:
    """Return (principal, CSRF token) for the request's session cookie, or None."""
    return auth.app_sessions(current_app).principal(request.cookies.get(auth.SESSION_COOKIE))


def signed_in(view=None, *, scope: str = "read"):
    """Let only signed-in principals holding ``scope`` in; send others to the sign-in page."""
    if isinstance(view, str):  # @signed_in("write")
        return lambda v: signed_in(v, scope=view)
    if view is None:
        return lambda v: signed_in(v, scope=scope)

    @wraps(view)
    def guarded(**kwargs):
        found = current_session()
        if found is None:
            return redirect(url_for("ui.login", next=request.full_path.rstrip("?")))
        g.principal, g.csrf = found
        if not g.principal.allows(scope):
            return error_page(403, "Not allowed",
                              f"This page needs the {scope} scope; you have {g.principal.scope}.")
        return view(**kwargs)

    return guarded


def error_page(status: int, title: str, message: str):
    """Render the UI's error page (never a traceback) with ``status``."""
    if "principal" not in g:
        try:
            found = current_session()
        except Exception:  # the database itself may be what failed
            found = None
        if found:
            g.principal, g.csrf = found
    return render_template("ui/error.html", status=status, title=title,
                           message=message), status


def html_error(exc) -> tuple:
    """Answer an HTTPException raised under /ui with the error page (web.py calls this)."""
    titles = {404: "Not found", 405: "Method not allowed", 413: "Too large"}
    status = getattr(exc, "code", None) or 500
    if status >= 500:
        return error_page(status, "Something went wrong",
                          "The server could not show this page; the error is in its log.")
    message = ("There is no such page." if status == 404 else
               getattr(exc, "description", None) or "The request was refused.")
    return error_page(status, titles.get(status, "Request refused"), message)


@ui.errorhandler(UserError)
def _user_error(exc: UserError):
    if isinstance(exc, NotFound):
        return error_page(404, "Not found", str(exc))
    return error_page(400, "Request refused", str(exc))


@ui.app_template_global("ui_context")
def _ui_context() -> dict:
    principal = g.get("principal")
    return {"principal": principal, "csrf_token": g.get("csrf", ""),
            "can_write": bool(principal and principal.allows("write"))}


@ui.app_template_global("link_args")
def _link_args(**fixed) -> dict:
    """Return the request's query arguments but ``page``, updated with ``fixed`` (pagers)."""
    args = {k: v for k, v in request.args.items() if k != "page" and v != ""}
    args.update(fixed)
    return args


@ui.app_template_filter("when")
def format_when(value) -> str:
    """Format a naive UTC datetime (how the store keeps them) as 'YYYY-MM-DD HH:MM:SS'."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S")


@ui.app_template_filter("iso")
def format_iso(value) -> str:
    if not isinstance(value, dt.datetime):
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


@ui.app_template_filter("duration")
def format_duration(ms) -> str:
    """Format milliseconds for people: 120 ms, 3.4 s, 2 min 5 s."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@ui.app_template_filter("pretty")
def format_json(value) -> str:
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


@ui.after_app_request
def _security_headers(response):
    if is_ui_request():
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")
    return response


@ui.get("/")
def root():
    return redirect(url_for("ui.home"))


@ui.get("/ui/")
def home():
    return redirect(url_for("ui.flows_list"))


from . import signin, pages, runs  # noqa: E402,F401  (views register on the blueprint)
from . import builder  # noqa: E402,F401  (the flow builder)
