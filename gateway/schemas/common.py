"""Field types both protocols' request schemas share."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

from routing.resolution import MAX_MODEL_NAME

# A model name is client-chosen and travels into caches, metric labels, log
# rows and response headers: bounded, and without control characters (a CR/LF
# would break the X-Gateway-Model header after the upstream was already paid).
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_MODEL_NAME, pattern=r"^[^\x00-\x1f\x7f]+$")
]
