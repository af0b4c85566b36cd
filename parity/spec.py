"""A module pair: the reference, the port, and what it takes to check one against the other.

The parity engine knows nothing about PAM or CAM: it runs a ``ModulePair``. The bundled
pairs are below; a planted buggy port, or a user's own, is the same pair with another
``make_port`` (``dataclasses.replace(PAM, make_port=MyPort)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from impl_keras import ChannelAttention, PositionAttention
from parity.layout import Binding, bindings_for
from reference_torch import CAM_Module, PAM_Module

GAMMA_MAGNITUDE = (0.25, 4.0)
"""Scalar parameters (``gamma``) are drawn this far from zero, with a random sign: at
PyTorch's init (0) the attention path is invisible and its gradients vanish."""


def random_parameters(module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A state_dict for ``module`` with every parameter redrawn, as float32 values.

    Rank >= 2 (kernels): uniform in +-1/sqrt(fan_in), PyTorch's default bound. Biases: the
    same bound as their layer's kernel. One-element parameters: log-uniform magnitude in
    GAMMA_MAGNITUDE, random sign. Buffers are kept as they are. Values are rounded to
    float32 so that the float32 and float64 runs see exactly the same numbers.
    """
    state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    parameters = dict(module.named_parameters())
    for name, param in parameters.items():
        shape = tuple(param.shape)
        if param.numel() == 1:
            low, high = np.log(GAMMA_MAGNITUDE)
            value = rng.choice([-1.0, 1.0]) * np.exp(rng.uniform(low, high, size=shape))
        else:
            sibling = parameters.get(name.rsplit(".", 1)[0] + ".weight", param)
            fan_in = int(np.prod(sibling.shape[1:])) if sibling.dim() >= 2 else 1
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, size=shape)
        state[name] = value.astype(np.float32)
    return state


@dataclass(frozen=True)
class ModulePair:
    """A PyTorch reference module and the Keras port that claims to compute the same.

    Attributes:
        name: short name used on the command line (``pam``).
        make_reference: ``channels -> torch.nn.Module``.
        make_port: ``channels -> keras.layers.Layer`` (built on first call).
        data_format: the layout the port reads and writes.
        bindings: ``layer -> [Binding]``: which Keras variable holds which reference
            parameter, through which layout.
        min_channels, max_channels: the channel counts the pair is checked on.
        randomize: ``(reference module, numpy Generator) -> state_dict`` of random weights.
    """

    name: str
    make_reference: Callable[[int], Any]
    make_port: Callable[[int], Any]
    data_format: str = "channels_last"
    bindings: Callable[[Any], list[Binding]] = bindings_for
    min_channels: int = 1
    max_channels: int = 48
    randomize: Callable[[Any, np.random.Generator], dict[str, np.ndarray]] = random_parameters


PAM = ModulePair(
    name="pam",
    make_reference=PAM_Module,
    make_port=lambda channels: PositionAttention(),
    min_channels=8,
)
CAM = ModulePair(
    name="cam",
    make_reference=CAM_Module,
    make_port=lambda channels: ChannelAttention(),
    min_channels=1,
)
BUILTIN_PAIRS = {pair.name: pair for pair in (PAM, CAM)}


def channels_first(pair: ModulePair) -> ModulePair:
    """The same pair with the bundled port run on NCHW inputs."""
    port_class = {"pam": PositionAttention, "cam": ChannelAttention}[pair.name]
    return replace(
        pair,
        name=f"{pair.name}-channels-first",
        make_port=lambda channels: port_class(data_format="channels_first"),
        data_format="channels_first",
    )
