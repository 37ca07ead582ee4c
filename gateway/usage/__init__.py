"""The request log and usage: one row per API request, the daily rollup, their admin.

A Django app (label `usage`). Models, the admin's log list and usage page,
reads (`selectors`), writes (`services`: batches, pruning), the request
path's batching writer (`writer`) and the `prune_request_log` command live here.
"""
