"""``nextclass review RUN|DATA``: walk through what the audit and the model found and decide on each image.

:func:`collect` gathers the items (:mod:`nextclass.review.collect`), :func:`create_app` serves the page that
saves each decision to an append-only corrections file (:mod:`nextclass.data.corrections`), which
``train``/``audit``/``evaluate --corrections`` apply. Importing this package imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["collect", "create_app"]


def collect(target: Any, **kwargs: Any):
    """See :func:`nextclass.review.collect.collect`."""
    from nextclass.review.collect import collect as _collect

    return _collect(target, **kwargs)


def create_app(review: Any, corrections: Any):
    """See :func:`nextclass.review.app.create_app`."""
    from nextclass.review.app import create_app as _create_app

    return _create_app(review, corrections)
