"""Hypothesis strategies for parity examples: shapes, input scales, seeds.

Every example is a handful of numbers (``Example``); weights, input and cotangent are drawn
from its seed, so a failing example is reproduced exactly from the line Hypothesis prints.
The defaults favour the shapes that expose port bugs: batch >= 2 next to batch 1, H != W,
H or W = 1, H*W off multiples of 8, channel counts off multiples of 8, and input scales on
both sides of the point where softmax rows saturate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

MAX_BATCH = 4
MAX_SIDE = 24
MAX_CHANNELS = 48
MIN_SCALE = 1e-3
MAX_SCALE = 10.0
MAX_SEED = 2**32 - 1


class Example(NamedTuple):
    """One parity example: input shape (reference layout NCHW), input scale, and a seed."""

    batch: int
    channels: int
    height: int
    width: int
    scale: float
    seed: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.height, self.width)

    def to_text(self) -> str:
        """The form ``parity check --example`` reads back."""
        return ",".join(str(v) for v in self)

    @classmethod
    def from_text(cls, text: str) -> Example:
        parts = text.split(",")
        if len(parts) != len(cls._fields):
            raise ValueError(
                f"Expected {len(cls._fields)} comma-separated values "
                f"({','.join(cls._fields)}). Received: {text!r}"
            )
        *sizes, scale, seed = (part.strip() for part in parts)
        names = "batch, channels, H and W"
        if not all(size.isdigit() and int(size) >= 1 for size in sizes):
            raise ValueError(f"{names} must be whole numbers of at least 1. Received: {text!r}")
        try:
            scale_value = float(scale)
        except ValueError:
            scale_value = math.nan
        if not (math.isfinite(scale_value) and scale_value > 0):
            raise ValueError(f"scale must be a finite number above 0. Received: {scale!r}")
        if not (seed.isdigit() and int(seed) <= MAX_SEED):
            raise ValueError(
                f"seed must be a whole number from 0 to {MAX_SEED}. Received: {seed!r}"
            )
        return cls(*(int(size) for size in sizes), scale_value, int(seed))


def _check_range(low_name: str, low, high_name: str, high, minimum) -> None:
    if low < minimum:
        raise ValueError(f"{low_name}={low} must be at least {minimum}")
    if high < low:
        raise ValueError(f"{low_name}={low} is larger than {high_name}={high}")


def batches(*, min_batch: int = 1, max_batch: int = MAX_BATCH) -> st.SearchStrategy[int]:
    """Batch sizes; >= 2 is where cross-batch leaks show, 1 is where they hide."""
    _check_range("min_batch", min_batch, "max_batch", max_batch, 1)
    return st.integers(min_batch, max_batch)


def channel_counts(
    *, min_channels: int = 8, max_channels: int = MAX_CHANNELS
) -> st.SearchStrategy[int]:
    """Channel counts, multiples of 8 and not (PAM projects to channels // 8)."""
    _check_range("min_channels", min_channels, "max_channels", max_channels, 1)
    return st.integers(min_channels, max_channels)


def spatial_sizes(
    *, min_side: int = 1, max_side: int = MAX_SIDE
) -> st.SearchStrategy[tuple[int, int]]:
    """(H, W), drawn independently: H != W, sides of 1 and H*W off multiples of 8 happen."""
    _check_range("min_side", min_side, "max_side", max_side, 1)
    side = st.integers(min_side, max_side)
    return st.tuples(side, side)


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    # Three significant digits keep a printed example exact to replay.
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: float(f"{10**e:.3g}"))


def input_scales(
    *,
    min_scale: float = MIN_SCALE,
    max_scale: float = MAX_SCALE,
    positions: int | None = None,
) -> st.SearchStrategy[float]:
    """Standard deviations of the input, log-uniform in [min_scale, max_scale].

    With ``positions`` (H*W) given, a quarter of the draws each go to the two regimes of
    CAM's softmax, scale = c * positions**-0.25: the rows of the Gram matrix differ by about
    sqrt(positions) * scale**2 = c**2, so c in [0.1, 1] keeps attention rows soft and c in
    [3, 30] saturates them (one-hot rows, where float32 logit errors are amplified). Both
    matter, and the wide draw alone rarely reaches either at a given H*W. Another quarter
    goes to the smallest decade, [min_scale, 10 * min_scale], where a tensor's error sits
    at the float32 floor: the wide draw's share of it ranged from 2% to 8% with what else
    the test session imported (Hypothesis draws constants found in loaded modules).
    """
    if not 0 < min_scale <= max_scale:
        raise ValueError(
            f"Expected 0 < min_scale <= max_scale. Received: min_scale={min_scale}, "
            f"max_scale={max_scale}"
        )
    wide = _log_uniform(min_scale, max_scale)
    if positions is None:
        return wide
    if positions < 1:
        raise ValueError(f"positions={positions} must be at least 1")

    def regime(low_c, high_c):
        return _log_uniform(low_c, high_c).map(
            lambda c: min(max(float(f"{c * positions**-0.25:.3g}"), min_scale), max_scale)
        )

    smallest = _log_uniform(min_scale, min(max_scale, 10 * min_scale))
    return st.one_of(wide, regime(0.1, 1.0), regime(3.0, 30.0), smallest)


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, MAX_SEED)


def examples(
    *,
    min_batch: int = 1,
    max_batch: int = MAX_BATCH,
    min_channels: int = 8,
    max_channels: int = MAX_CHANNELS,
    min_side: int = 1,
    max_side: int = MAX_SIDE,
    min_scale: float = MIN_SCALE,
    max_scale: float = MAX_SCALE,
) -> st.SearchStrategy[Example]:
    """Whole examples, composed of the strategies above (arguments checked here, eagerly)."""
    batch_sizes = batches(min_batch=min_batch, max_batch=max_batch)
    channels = channel_counts(min_channels=min_channels, max_channels=max_channels)
    sides = spatial_sizes(min_side=min_side, max_side=max_side)
    input_scales(min_scale=min_scale, max_scale=max_scale)  # validates the range

    @st.composite
    def draw_example(draw) -> Example:
        batch, channel_count, (height, width) = draw(batch_sizes), draw(channels), draw(sides)
        scale = draw(
            input_scales(min_scale=min_scale, max_scale=max_scale, positions=height * width)
        )
        return Example(batch, channel_count, height, width, scale, draw(seeds()))

    return draw_example()


def float32_values(array: np.ndarray) -> np.ndarray:
    """Floating arrays rounded to float32 values (held in float64); others unchanged."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return array
    return array.astype(np.float32).astype(np.float64)


@dataclass(frozen=True)
class ExampleData:
    """What an example's seed expands to, as float32 values held in float64 arrays."""

    state: dict[str, np.ndarray]  # reference state_dict
    x: np.ndarray  # (B, C, H, W)
    seed: int

    def cotangents(self, shapes) -> list[np.ndarray]:
        """Random cotangents for outputs of these NCHW shapes (random, so not sum())."""
        rng = np.random.default_rng([self.seed, 1])
        return [float32_values(rng.standard_normal(tuple(shape))) for shape in shapes]
