"""HTTP serving: ``nextclass serve MODEL`` / :func:`nextclass.serve.create_app`.

FastAPI app (model loaded in the lifespan), micro-batched inference, Prometheus ``/metrics`` and
a plain HTML/JS page at ``/``. Importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(model: Any, **kwargs: Any):
    """See :func:`nextclass.serve.app.create_app`."""
    from nextclass.serve.app import create_app as _create_app

    return _create_app(model, **kwargs)
