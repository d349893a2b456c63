"""The built-in apps: the glue a flow needs when a service has no plugin, or between steps.

They call no service with credentials of their own (no connection needed): catch any
webhook, fire on a schedule, make any HTTP request (optionally authenticated by another
app's connection), format data, branch into paths, loop over a list, and wait.
"""
from __future__ import annotations

from connector import App, hookimpl


class Webhook(App):
    key = "webhook"
    label = "Webhooks"
    help = "Catch any webhook: a URL per flow that turns each POST into a trigger item."


class Schedule(App):
    key = "schedule"
    label = "Schedule"
    help = "Start a flow every N minutes or hours, or on a cron expression in a time zone."


class Http(App):
    key = "http"
    label = "HTTP request"
    help = "Call any HTTP API: method, URL, query, headers, body, auth."


class Formatter(App):
    key = "formatter"
    label = "Formatter"
    help = "Reshape data between steps: text, numbers, dates, phone numbers, lookup tables."


class Paths(App):
    key = "paths"
    label = "Paths"
    help = "Branch a flow: run the steps of every branch (or the first) whose conditions hold."


class Looping(App):
    key = "looping"
    label = "Looping"
    help = "Run nested steps once for each element of a list."


class Errors(App):
    key = "errors"
    label = "Errors"
    help = "React to failed runs of other flows, e.g. notify someone."


class Delay(App):
    key = "delay"
    label = "Delay"
    help = "Pause a run for a while or until a time, without holding a worker."


@hookimpl
def register_apps(register):
    for app in (Webhook, Schedule, Http, Formatter, Paths, Looping, Delay, Errors):
        register(app)
