"""The built-in apps (webhook, schedule, HTTP, formatter, paths, looping, delay).

Being written (issues 4 and 9); registers nothing yet.
"""
