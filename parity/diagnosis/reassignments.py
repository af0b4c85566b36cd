"""Hypotheses that the port is right and its weights are assigned wrong: its prediction is
the port itself, reloaded another way.

Each is a ``parity.core.hypotheses.Hypothesis`` with ``rebind(assigned)``: the bindings that
assign the reference's parameters as a port with that bug holds them, with the cause in
words (and, where the user can fix it with a weight map, the map), or None where the bug
cannot arise for this port. The pairs supply their role swaps (query and key) and buffer
swaps (BatchNorm's statistics); kernel layouts are tried for every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parity.core.hypotheses import Assigned, Rebinding
from parity.core.layout import CONV_KERNEL, Binding, Layout

# -- kernels loaded through another layout -----------------------------------------------------


@dataclass(frozen=True)
class _Reshaped(Layout):
    """OIHW reshaped to HWIO: shapes fit, values scramble."""

    def to_keras(self, array):
        return np.asarray(array).reshape(self.keras_shape(array.shape))

    def to_torch(self, array):
        kh, kw, i, o = array.shape
        return np.asarray(array).reshape(o, i, kh, kw)


@dataclass(frozen=True)
class KernelLayout:
    """The port's convolution kernels read as if laid out as ``layout`` describes."""

    key: str
    layout_name: str  # 'in and out swapped (HWOI)'
    layout: Layout

    @property
    def name(self) -> str:
        return f"kernel layout: {self.layout_name}"

    @property
    def cause(self) -> str:
        if self.layout is CONV_KERNEL:
            return (
                "the kernel layout is wrong in conversion: converted with the correct "
                "OIHW -> HWIO transpose instead, the kernels make the port match"
            )
        return (
            f"the kernel layout is wrong in conversion: the port reads its kernels as "
            f"if they were {self.layout_name}; loaded that way, they make the port match"
        )

    def rebind(self, assigned: Assigned) -> Rebinding | None:
        """Every kernel loaded through ``layout``; None where the port has no kernel, loads
        them that way already, or one would not fit."""
        current, state = assigned.bindings, assigned.state
        kernels = [b for b in current if len(state[b.torch_key].shape) == 4]
        if not kernels or all(b.layout == self.layout for b in kernels):
            return None
        if any(self.layout.keras_shape(state[b.torch_key].shape) != b.port_shape for b in kernels):
            return None
        return Rebinding(
            [Binding(b.torch_key, b.variable, self.layout) if b in kernels else b for b in current],
            self.cause,
        )


KERNEL_LAYOUTS = (
    KernelLayout("kernel-layout.hwio", "OIHW transposed to HWIO (correct)", CONV_KERNEL),
    KernelLayout(
        "kernel-layout.reshaped",
        "OIHW reshaped into HWIO without a transpose",
        _Reshaped(
            "reshaped",
            CONV_KERNEL.torch_layout,
            CONV_KERNEL.keras_layout,
            CONV_KERNEL.to_keras_axes,
        ),
    ),
    KernelLayout(
        "kernel-layout.hwoi",
        "in and out swapped (HWOI)",
        Layout("HWOI", CONV_KERNEL.torch_layout, "HWOI", (2, 3, 0, 1)),
    ),
    KernelLayout(
        "kernel-layout.whio",
        "kernel transposed on H and W (WHIO)",
        Layout("WHIO", CONV_KERNEL.torch_layout, "WHIO", (3, 2, 1, 0)),
    ),
)
"""Kernel layouts a port may have been loaded through, tried for every pair."""
