"""Client API keys: the keys callers present, their model lists, rate limits and budgets.

A Django app (label `keys`). Models, admin, reads (`selectors`, the cached
keyring the request path uses), writes (`services`), the `create_api_key`
command, and the request path's checks: who is calling (`auth`), how fast
(`ratelimit`) and how much they spent (`budgets`).
"""
