"""Signing in (a username and password, or an API key) and out: the UI's only form posts.

A sign-in sets the session cookie made by :class:`connector.auth.Sessions` (Secure when the
request came over https). The sign-in form carries its own token, checked against a
short-lived cookie set with the form (double submit), so another site cannot sign a browser
in to an account of its choosing; signing out checks the session's CSRF token.
"""
from __future__ import annotations

import hmac
import secrets

from flask import current_app, g, make_response, redirect, render_template, request, url_for

from .. import auth
from . import current_session, error_page, ui

LOGIN_COOKIE = "connector_login"
LOGIN_FIELD = "login_token"


def _safe_next(value: str | None) -> str:
    """Return ``value`` when it is a UI path on this site, else the flows page."""
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return url_for("ui.flows_list")


def _form(status: int = 200, errors: dict | None = None, message: str | None = None,
          mode: str = "password"):
    token = secrets.token_urlsafe(24)
    html = render_template("ui/login.html", errors=errors or {}, message=message, mode=mode,
                           login_token=token, username=request.form.get("username", ""),
                           next=request.values.get("next", ""))
    response = make_response(html, status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.is_secure, path=url_for("ui.login"), max_age=3600)
    return response


@ui.get("/ui/login")
def login():
    if current_session() is not None:
        return redirect(_safe_next(request.args.get("next")))
    return _form()


@ui.post("/ui/login")
def login_post():
    mode = "key" if request.form.get("method") == "key" else "password"
    expected, given = request.cookies.get(LOGIN_COOKIE), request.form.get(LOGIN_FIELD)
    if not (expected and given and hmac.compare_digest(expected.encode(), given.encode())):
        return _form(400, message="The sign-in form expired or your browser did not send its "
                                  "cookie; allow cookies for this site and try again.",
                     mode=mode)
    if mode == "key":
        raw = request.form.get("api_key", "").strip()
        if not raw:
            return _form(400, {"api_key": "Paste an API key (connector keys create)."},
                         mode=mode)
        principal = auth.key_principal(raw)
        if principal is None:
            return _form(401, {"api_key": "This API key is not valid or was revoked."},
                         mode=mode)
    else:
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        errors = {}
        if not username:
            errors["username"] = "Enter your username."
        if not password:
            errors["password"] = "Enter your password."
        if errors:
            return _form(400, errors, mode=mode)
        user = auth.check_password(username, password)
        if user is None:
            return _form(401, message="Wrong username or password.", mode=mode)
        principal = auth.user_principal(user)
    value, _csrf = auth.app_sessions(current_app).issue(principal)
    response = redirect(_safe_next(request.form.get("next")))
    response.set_cookie(auth.SESSION_COOKIE, value, **auth.cookie_options(request.is_secure))
    response.delete_cookie(LOGIN_COOKIE, path=url_for("ui.login"))
    return response


@ui.post("/ui/logout")
def logout():
    found = current_session()
    if found is not None:
        g.principal, g.csrf = found
        if not auth.check_csrf(g.csrf, request.form.get(auth.CSRF_FIELD)):
            return error_page(403, "Not signed out",
                              "The sign-out form's CSRF token is missing or wrong; reload "
                              "the page and sign out again.")
    response = redirect(url_for("ui.login"))
    options = auth.cookie_options(request.is_secure)
    response.delete_cookie(auth.SESSION_COOKIE, path=options["path"],
                           secure=options["secure"], httponly=True, samesite="Lax")
    return response
