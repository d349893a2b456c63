"""The Flask application: the webhook receiver, the REST API and the web UI (own blueprints).

``create_app(host)`` is the factory; one blueprint per concern. Every error answers with the
envelope the services use: ``{"error": {"code", "message"}}``, except on the UI's pages
(/ui), which answer with an HTML error page.
"""
from __future__ import annotations

from typing import Callable

from flask import Blueprint, Flask, current_app, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import store
from .api import api, validation_error
from .host import Host
from .intake import await_reply, receive_webhook
from .sdk import WebhookRequest
from .ui import html_error, is_ui_request, ui

MAX_BODY = 2 * 1024 * 1024  # the services document 2 MiB; nobody needs more for an event
ACCEPTED_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data",
                  "text/plain")

hooks = Blueprint("hooks", __name__)


def _error(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


def read_body(limit: int = MAX_BODY, cache: bool = False) -> bytes:
    """Return the raw body; past ``limit`` raise 413, even for a chunked upload.

    Flask cuts a chunked body (no Content-Length) at MAX_CONTENT_LENGTH without a word,
    which would turn an oversized delivery into a confusing signature failure.
    """
    if request.content_length is None and request.environ.get("wsgi.input_terminated"):
        stream, chunks, size = request.environ["wsgi.input"], [], 0
        while size <= limit:
            chunk = stream.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
        return b"".join(chunks)
    return request.get_data(cache=cache)


@hooks.post("/hooks/<token>")
def receive(token: str):
    """Verify on the raw body, record ledger entry and queued run in one commit, answer 2xx."""
    ctype = (request.mimetype or "").lower()
    body = read_body()
    if body and ctype and not (ctype in ACCEPTED_TYPES or ctype.endswith("+json")):
        return _error(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"Content-Type {ctype} is not accepted; send application/json")
    req = WebhookRequest(headers=request.headers, body=body, args=request.args.to_dict(),
                         content_type=ctype)
    try:
        reply, intake = receive_webhook(current_app.extensions["connector"], token, req)
    except RecursionError:
        # JSON nested deeper than the parser follows (a few KiB of "[[[["): a bad payload.
        # Nothing was recorded: the ledger transaction, if it had begun, was rolled back.
        return _error(400, "INVALID_PAYLOAD", "payload is nested too deeply")
    if intake.created:
        notify = current_app.extensions.get("connector.on_queued")
        if notify:
            notify()
        if intake.reply_timeout:
            reply = await_reply(intake.created, intake.reply_timeout)
    return jsonify(reply.body), reply.status


@hooks.get("/healthz")
def health():
    return jsonify({"ok": True})


def create_app(host: Host, on_queued: Callable[[], None] | None = None,
               test_config: dict | None = None) -> Flask:
    """Build the WSGI app for ``host``; ``on_queued`` is called when a request queued runs."""
    app = Flask("connector")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, JSON_SORT_KEYS=False)
    if test_config:
        app.config.update(test_config)
    app.extensions["connector"] = host
    app.extensions["connector.on_queued"] = on_queued
    app.register_blueprint(hooks)
    app.register_blueprint(api)  # the REST API under /api/v1
    app.register_blueprint(ui)  # the web UI under /ui (and / redirecting to it)
    app.register_error_handler(ValidationError, validation_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if is_ui_request():
            return html_error(exc)
        code = {413: "PAYLOAD_TOO_LARGE", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(
            exc.code, "HTTP_ERROR")
        message = ("request body is larger than 2 MiB" if exc.code == 413 else exc.description)
        return _error(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    def crash(exc: Exception):
        app.logger.exception("unhandled error")
        if is_ui_request():
            return html_error(exc)
        return _error(500, "INTERNAL", "internal error; the request was not recorded")

    @app.teardown_appcontext
    def close_db(_exc):
        if not store.db.is_closed():
            store.db.close()

    return app
