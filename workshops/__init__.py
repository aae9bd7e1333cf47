"""Public handler modules, installed as the package `wodmail.workshops`.

One module per workshop that needs more than the default flow: it declares
`WORKSHOPS = ("WKSHP-x", ...)` and defines any of the async hooks `create`, `post_copy`,
`cleanup`, `reset`, each taking a `wodmail.hooks.HookContext`. See `wodmail.hooks` for
when they run and what they may do. Files starting with `_` are helpers, not handlers.
"""
