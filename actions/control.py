"""Flow control steps: paths, for each, delay.

Being written (issues 4 and 9); registers nothing yet.
"""
