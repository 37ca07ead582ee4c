"""The wire protocols the gateway speaks, one package each: `openai`, `anthropic`.

Each package owns its protocol's request and response shapes (the pydantic
schemas the API documents and validates with) and every translation between
that protocol and the internal form (`inference.types`), in both roles:

- as the gateway's own API: a client's request -> internal request
  (`client_request`), an internal answer or event stream -> the client's
  response body or SSE events (`client_response`);
- as a provider the gateway calls: internal request -> upstream request body
  (`upstream_request`), the upstream's answer or SSE events -> internal
  (`upstream_response`).

Besides: `schemas` (the request shapes), `models` (the /v1/models shapes).
What both share is `common`; the error envelopes are `gateway.errors`' (the
one place errors become HTTP), which a stream encoder only frames.

The views in `gateway/api/` and the cloud clients in `inference/cloud/` only
call these packages; how bytes travel (HTTP, pools, timeouts) and how errors
become HTTP statuses stay with them.

Why here, inside `inference`: the cloud clients need these translations, and
the layers run gateway -> routing -> inference with no import back up. A
top-level package would import `inference.types` while `inference.cloud`
imports it, a cycle between packages; under `inference` it is one more layer
below the gateway, beside the types it translates. The packages import only
`inference.types`, `inference.errors`, `inference.base` and `inference.jsonio`
(never `inference.cloud`, `routing` or `gateway`).
"""
