"""Inference: the internal form of a chat request and answer (`types`), the
backends that answer one (`local`: MLX in this process; `cloud`: an upstream
over HTTP) and the wire protocols' translations (`wire`). The bottom layer:
no Django, no routing."""
