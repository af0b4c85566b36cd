"""The same values in another layout: a port holds the reference's (B, C, N) as (B, H, W, C),
its (B, N, N) as the transpose, its (B, C, H, W) as NHWC.

Each axis is split into the example's sizes it is made of (its *atoms*: B, C, H, W, and
N = H * W as H then W, row-major as both frameworks flatten), so that a layout is a
permutation of atoms; axes of size 1 carry nothing. A port's tensor holds a reference
value in layout when some permutation of its atoms, of equal sizes position by position,
gives the reference's array. The example's sides are chosen apart (B, C, H, W distinct) so
that few permutations fit; where sizes coincide every fitting permutation is tried.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

MAX_PERMUTATIONS = 720


def atoms(shape: tuple[int, ...], sizes: tuple[int, int, int, int]) -> tuple[int, ...]:
    """The axes of ``shape`` split into the example's sizes (batch, channels, height,
    width): N = H * W becomes (H, W), C * H * W becomes (C, H, W); other sizes stay whole."""
    _, channels, height, width = sizes
    whole = set(sizes)
    split: list[int] = []
    for size in shape:
        if size == 1:
            continue
        if size in whole:
            split.append(size)
        elif size == height * width:
            split += [height, width]
        elif size == channels * height * width:
            split += [channels, height, width]
        else:
            split.append(size)
    return tuple(split)


def relayouts(
    port_shape: tuple[int, ...], reference_shape: tuple[int, ...], sizes
) -> Iterator[Callable[[np.ndarray], np.ndarray]]:
    """Each way of reading an array of ``port_shape`` as one of ``reference_shape`` by a
    permutation of atoms (the identity first); none when their atoms differ."""
    ours, theirs = atoms(port_shape, sizes), atoms(reference_shape, sizes)
    if sorted(ours) != sorted(theirs) or int(np.prod(port_shape)) != int(np.prod(reference_shape)):
        return
    seen = 0
    for permutation in itertools.permutations(range(len(ours))):
        if any(ours[p] != size for p, size in zip(permutation, theirs, strict=True)):
            continue
        seen += 1
        if seen > MAX_PERMUTATIONS:
            return

        def read(value: np.ndarray, permutation=permutation) -> np.ndarray:
            return np.reshape(np.transpose(np.reshape(value, ours), permutation), reference_shape)

        yield read
