"""Duplicate groups that do not chain: an image and its copies, around a centre.

Connected components of "is a near copy of" links chain look-alikes (A~B, B~C, ... Y~Z puts A and Z
together even when they share nothing): on Fashion-MNIST that made one 6,006-image "group" of
different garments. Here the image with the most links becomes a centre and takes its copies, then
the next one, so every member of a group is linked to its centre.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centre_groups"]


def centre_groups(n: int, i: np.ndarray, j: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Group id (the centre's index) per node for links ``i[k]``-``j[k]`` among ``n`` nodes.

    The node with the most links not yet taken becomes a centre (ties: lower ``rank``, e.g. train
    before val before test, then position) and takes its untaken neighbours; a node without links
    is its own group.

    Example:
        >>> centre_groups(4, np.array([0, 1]), np.array([1, 2]), np.zeros(4, int)).tolist()
        [1, 1, 1, 3]
    """
    deg = np.bincount(np.concatenate([i, j]), minlength=n)
    src, dst = np.concatenate([i, j]), np.concatenate([j, i])
    by = np.argsort(src, kind="stable")
    src, dst = src[by], dst[by]
    start = np.searchsorted(src, np.arange(n + 1))
    centre = np.arange(n)
    taken = np.zeros(n, bool)
    for v in np.lexsort((np.arange(n), rank, -deg)):
        if deg[v] == 0:
            break  # sorted by degree: the rest are alone
        if taken[v]:
            continue
        nb = dst[start[v]:start[v + 1]]
        nb = nb[~taken[nb]]
        taken[v] = True
        taken[nb] = True
        centre[nb] = v
    return centre
