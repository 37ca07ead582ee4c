"""Client API keys: the keys callers present, their model lists, rate limits and budgets.

A Django app (label `keys`). Models, admin, reads (`selectors`, the cached
keyring the request path uses), writes (`services`) and the `create_api_key`
command live here; the request-path checks that use them are `gateway.auth`,
`gateway.ratelimit` and `gateway.budgets`.
"""
