"""The peers wodmail calls over HTTP: the portal's API-DB and JupyterHub.

`portal` and `hub` are the clients; `_http` is what they share (construction checks, one
timed and logged request, reading odd error bodies). Nothing else speaks HTTP.
"""
