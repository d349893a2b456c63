"""SAMI OS (real-estate CRM): the app.

Being written (issues 4 and 9); registers nothing yet.
"""
