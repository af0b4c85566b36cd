"""Bilinear resizing with PyTorch's ``align_corners=True`` semantics, in ``keras.ops``.

DANet resizes its predictions with ``F.interpolate(..., mode="bilinear",
align_corners=True)``: output pixel i samples the input at ``i * (in - 1) / (out - 1)``, so
the corner pixels of input and output coincide. Keras' ``Resizing`` and ``ops.image.resize``
sample at half-pixel centres (``align_corners=False``), which moves every interior value.
Here each axis is gathered at the two neighbouring input indices and interpolated linearly,
with the indices and weights computed as PyTorch's CPU kernel computes them (the scale in the
input's dtype, the lower index clamped to the last row, the weight clamped to [0, 1]).
"""

from __future__ import annotations

from keras import ops


def resize_bilinear_align_corners(x, size, data_format="channels_last"):
    """``x`` resized to ``size = (height, width)``.

    Args:
        x: ``(batch, H, W, C)`` (or ``(batch, C, H, W)`` for ``"channels_first"``).
        size: the output's height and width (integers or scalar tensors).
        data_format: ``"channels_last"`` or ``"channels_first"``.

    Output:
        ``(batch, height, width, C)`` (or ``(batch, C, height, width)``).
    """
    height_axis, width_axis = (1, 2) if data_format == "channels_last" else (2, 3)
    # Width first, then height, in PyTorch's order. Its kernel fuses a multiply-add, which
    # keras.ops has no operation for: float64 results agree to an ulp or two, not to the bit.
    x = _interpolate_axis(x, size[1], width_axis)
    return _interpolate_axis(x, size[0], height_axis)


def _interpolate_axis(x, out_size, axis):
    """Linear interpolation along one axis, corners aligned."""
    dtype = x.dtype
    in_size = ops.shape(x)[axis]
    scale = ops.divide(
        ops.cast(in_size - 1, dtype), ops.cast(ops.maximum(out_size - 1, 1), dtype)
    )  # (in - 1) / (out - 1); 0 when in = 1; out = 1 samples index 0
    source = ops.arange(out_size, dtype=dtype) * scale  # (out,)
    lower = ops.minimum(ops.cast(ops.floor(source), "int32"), in_size - 1)
    upper = ops.minimum(lower + 1, in_size - 1)
    weight = ops.clip(source - ops.cast(lower, dtype), 0.0, 1.0)
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    weight = ops.reshape(weight, shape)  # broadcasts along the axis
    return (1.0 - weight) * ops.take(x, lower, axis=axis) + weight * ops.take(x, upper, axis=axis)
