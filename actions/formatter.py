"""Formatter actions: text, numbers, dates, phone numbers, lookup tables.

Being written (issues 4 and 9); registers nothing yet.
"""
