"""The bare Flask handler of the baseline: the same outbound POST, persisting nothing.

Served by gunicorn (4 sync workers) from bench/baseline.py. ``POST /hooks/<token>`` reads
the JSON delivery, POSTs ``{"contactId": data.context.contact_id}`` to the AI Connector
sandbox's add-to-list endpoint (``BASELINE_TARGET``) with a keep-alive requests.Session per
worker, and answers ``{"accepted": 1}`` once that call returned. ``POST /ping/<token>``
answers the same without the outbound call: the load generator's own ceiling here.
"""
import json
import os

import requests
from flask import Flask, jsonify, request

app = Flask(__name__)
TARGET = os.environ.get("BASELINE_TARGET", "")
_session = None


def session() -> requests.Session:
    global _session
    if _session is None:  # one per worker, created after gunicorn forked it
        _session = requests.Session()
    return _session


@app.post("/hooks/<token>")
def hook(token):
    event = json.loads(request.get_data())
    contact_id = event["data"]["context"]["contact_id"]
    answer = session().post(TARGET, json={"contactId": contact_id}, timeout=30)
    answer.raise_for_status()
    return jsonify({"accepted": 1, "duplicates": 0})


@app.post("/ping/<token>")
def ping(token):
    request.get_data()
    return jsonify({"accepted": 1, "duplicates": 0})
