"""Contacts API actions and searches: contacts, import, search, views, tags, custom data.

Every path is under /api/v1 (see plugins/contacts_api.py for the decisions on shapes and
limits where the document is vague). How each step stays safe to retry:

- create contact and each import batch: the service takes no idempotency key, so the call
  goes through the host's ledger (``ctx.once``); import batches use
  ``<idempotency key>:batch<i>``, so a retry after batch 3 failed re-sends only batches 3+.
- create tag / create custom field: a 409 (it exists) returns the existing record with
  ``created: false``, so a retry after a lost answer ends in the same state.
- update (PATCH), set values (PUT), add tags (a set union), remove a tag, save/delete a view
  (read, merge, put the whole list): naturally idempotent.
- deletes: a 404 means the goal already holds; with ``missing_ok`` (the default) the step
  succeeds with ``deleted: false``, so a retry after a lost 204 does not fail the run.

Fields left empty in a step (an unmapped template renders "") are not sent: an update
changes only what it is given, and ``clear`` names the fields to empty.
"""
from __future__ import annotations

from connector import hookimpl

from .bulk import ImportContacts
from .contacts import (
    CreateContact, DeleteContact, GetContact, ListOpportunities, UpdateContact,
)
from .custom_fields import (
    CreateCustomField, DeleteCustomField, ListCustomFields, SetContactCustomField,
    UpdateCustomField,
)
from .custom_values import DeleteCustomValue, ListCustomValues, SetCustomValue
from .search import ListContacts, SearchContacts
from .tags import AddTags, CreateTag, DeleteTag, ListTags, RemoveTag
from .views import DeleteView, ListViews, SaveView

ACTIONS = (CreateContact, GetContact, UpdateContact, DeleteContact, ImportContacts, SaveView,
           DeleteView, CreateTag, DeleteTag, AddTags, RemoveTag, CreateCustomField,
           UpdateCustomField, DeleteCustomField, SetContactCustomField, SetCustomValue,
           DeleteCustomValue)
SEARCHES = (ListContacts, SearchContacts, ListOpportunities, ListViews, ListTags,
            ListCustomFields, ListCustomValues)


@hookimpl
def register_actions(register):
    for cls in ACTIONS:
        register(cls)


@hookimpl
def register_searches(register):
    for cls in SEARCHES:
        register(cls)
