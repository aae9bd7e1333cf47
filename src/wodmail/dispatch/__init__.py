"""Dispatch: committed orders run, one lane per student, bounded overall, with retries.

`dispatcher` runs jobs, `executor` is the seam the intake hands them through, `steps` makes
named, timed, retried steps of an order.
"""
