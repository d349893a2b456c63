"""Fire on a schedule.

Being written (issues 4 and 9); registers nothing yet.
"""
