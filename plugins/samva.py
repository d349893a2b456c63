"""Samva (messaging: SMS, WhatsApp, email): the app.

Being written (issues 4 and 9); registers nothing yet.
"""
