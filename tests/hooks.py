"""A test-only plugin: app ``t`` with a webhook trigger ``t.hook`` that accepts every request.

Tests queue items for it with ``connector.intake.ingest`` (or POST them) to drive flows
without a service; register it with ``make_host(extra_plugins=[HookPlugin()])``, or with
``HookPlugin(SomeAction, ...)`` to register test actions beside it.
"""
from connector import App, WebhookTrigger, hookimpl


class HookApp(App):
    key = "t"
    label = "Test app"


class Hook(WebhookTrigger):
    key = "t.hook"
    app = "t"
    label = "Test hook"

    def verify(self, ctx, request, subscription):
        return None


class HookPlugin:
    def __init__(self, *actions):
        self.actions = actions

    @hookimpl
    def register_apps(self, register):
        register(HookApp)

    @hookimpl
    def register_triggers(self, register):
        register(Hook)

    @hookimpl
    def register_actions(self, register):
        for action in self.actions:
            register(action)
