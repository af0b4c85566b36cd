"""CBAM, the convolutional block attention module: a PyTorch reference, a Keras 3 port, its
bug hypotheses, and one planted bug, in one file.

Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon, "CBAM: Convolutional Block
Attention Module", ECCV 2018 (https://arxiv.org/abs/1807.06521). Channel attention: a shared
MLP (1x1 convolutions C -> C/r -> C, ReLU between, no biases) on the average- and the
max-pooled features, summed, sigmoid, multiplied in; then spatial attention: the channel-wise
mean and max, concatenated, a 7x7 convolution (padding 3, no bias), sigmoid, multiplied in.

Parameter names follow the widely copied PyTorch implementation of the block in ResNets
(``ca.fc1.weight``, ``ca.fc2.weight``, ``sa.conv1.weight``; e.g. luuuyi/CBAM.PyTorch),
written anew from the paper. Its hidden width is ``channels // reduction``; here it is at
least 1 (``max(channels // reduction, 1)``), so that any channel count works.

Importing this file imports no framework: the classes are defined on first use
(``reference_class()``, ``port_class()``; also as ``CBAM`` and ``ConvolutionalBlockAttention``
attributes of this module).
"""

from __future__ import annotations

from functools import cache

from parity.backends.torch.variants import stepped
from parity.core.layout import CONV_KERNEL, Binding
from parity.core.registry import BenchSpec, CheckpointSpec, PairDefinition, PlantedBug
from parity.core.sizes import ModuleSize

REDUCTION = 4
"""The reduction ratio the suite checks (the paper's is 16): hidden widths from 1 to 12
across the drawn channel counts."""

KERNEL_SIZE = 7

SIZE = ModuleSize(1, lambda b, c, h, w: b * (c + h * w))  # channel weights and a spatial map

ROLES = (
    ("fc1", frozenset({"fc1"})),
    ("fc2", frozenset({"fc2"})),
    ("conv1", frozenset({"conv1", "spatial"})),
)
"""Port weights named like the reference's (``fc1/kernel``) map by name."""


def hidden_channels(channels: int, reduction: int) -> int:
    return max(channels // reduction, 1)


# -- the PyTorch reference ---------------------------------------------------------------------


@cache
def reference_class():
    """``CBAM(channels, reduction=16, kernel_size=7)``, a ``torch.nn.Module``."""
    import torch
    from torch import nn

    class ChannelAttention(nn.Module):
        """Channel weights from the average- and max-pooled features through one MLP."""

        def __init__(self, channels: int, reduction: int = 16) -> None:
            super().__init__()
            hidden = hidden_channels(channels, reduction)
            self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
            self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            average = self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
            maximum = self.fc2(torch.relu(self.fc1(x.amax(dim=(2, 3), keepdim=True))))
            return torch.sigmoid(average + maximum)  # (B, C, 1, 1)

    class SpatialAttention(nn.Module):
        """A weight per position from the channel-wise mean and max."""

        def __init__(self, kernel_size: int = KERNEL_SIZE) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], 1)
            return torch.sigmoid(self.conv1(pooled))  # (B, 1, H, W)

    class CBAM(nn.Module):
        """Channel attention, then spatial attention, each multiplied into the features."""

        def __init__(
            self,
            channels: int,
            reduction: int = 16,
            kernel_size: int = KERNEL_SIZE,
        ) -> None:
            super().__init__()
            self.ca = ChannelAttention(channels, reduction)
            self.sa = SpatialAttention(kernel_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.ca(x) * x  # (B, C, H, W)
            return self.sa(x) * x

    return CBAM


# -- the Keras 3 port --------------------------------------------------------------------------


@cache
def port_class():
    """``ConvolutionalBlockAttention(reduction=16, kernel_size=7, data_format=None)``."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="parity.cbam")
    class ConvolutionalBlockAttention(keras.layers.Layer):
        """CBAM: channel attention, then spatial attention (Woo et al. 2018).

        Args:
            reduction: the shared MLP's reduction ratio (hidden width
                ``max(channels // reduction, 1)``).
            kernel_size: the spatial attention's convolution, padded to keep H and W.
            data_format: ``"channels_last"`` (default) or ``"channels_first"``.

        Call arguments:
            x: ``(batch, H, W, C)`` (or ``(batch, C, H, W)``), any batch, H and W.

        Output:
            The features reweighted, of the input's shape.
        """

        def __init__(self, reduction=16, kernel_size=KERNEL_SIZE, data_format=None, **kwargs):
            super().__init__(**kwargs)
            data_format = data_format or keras.config.image_data_format()
            if data_format not in ("channels_last", "channels_first"):
                raise ValueError(
                    "Expected one of {'channels_last', 'channels_first'}. "
                    f"Received: data_format={data_format}"
                )
            self.reduction = int(reduction)
            self.kernel_size = int(kernel_size)
            self.data_format = data_format
            self.channel_axis = -1 if data_format == "channels_last" else 1

        def build(self, input_shape):
            channels = int(input_shape[self.channel_axis])
            self.input_spec = keras.InputSpec(ndim=4, axes={self.channel_axis: channels})
            hidden = hidden_channels(channels, self.reduction)
            # Kernels held as HWIO, Keras' convolution layout.
            self.fc1 = self.add_weight(
                name="fc1", shape=(1, 1, channels, hidden), initializer="glorot_uniform"
            )
            self.fc2 = self.add_weight(
                name="fc2", shape=(1, 1, hidden, channels), initializer="glorot_uniform"
            )
            size = self.kernel_size
            self.conv1 = self.add_weight(
                name="conv1", shape=(size, size, 2, 1), initializer="glorot_uniform"
            )

        def _mlp(self, pooled):  # (B, C) -> (B, C)
            hidden = ops.relu(ops.matmul(pooled, self.fc1[0, 0]))
            return ops.matmul(hidden, self.fc2[0, 0])

        def call(self, x):
            spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
            weights = ops.sigmoid(
                self._mlp(ops.mean(x, axis=spatial)) + self._mlp(ops.max(x, axis=spatial))
            )  # (B, C)
            if self.data_format == "channels_last":
                x = x * weights[:, None, None, :]
            else:
                x = x * weights[:, :, None, None]
            axis = self.channel_axis
            pooled = ops.concatenate(
                [ops.mean(x, axis=axis, keepdims=True), ops.max(x, axis=axis, keepdims=True)],
                axis=axis,
            )  # (B, H, W, 2) or (B, 2, H, W)
            if self.data_format == "channels_first":
                pooled = ops.transpose(pooled, (0, 2, 3, 1))  # the conv runs NHWC everywhere
            attention = ops.sigmoid(ops.conv(pooled, self.conv1, padding="same"))
            if self.data_format == "channels_first":
                attention = ops.transpose(attention, (0, 3, 1, 2))
            return x * attention

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {
                **super().get_config(),
                "reduction": self.reduction,
                "kernel_size": self.kernel_size,
                "data_format": self.data_format,
            }

    return ConvolutionalBlockAttention


def __getattr__(name: str):
    """``CBAM`` and ``ConvolutionalBlockAttention``, defined when first asked for."""
    classes = {"CBAM": reference_class, "ConvolutionalBlockAttention": port_class}
    if name in classes:
        return classes[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bindings(layer) -> list[Binding]:
    """The port's kernels as the reference's parameters (OIHW -> HWIO)."""
    return [
        Binding("ca.fc1.weight", layer.fc1, CONV_KERNEL),
        Binding("ca.fc2.weight", layer.fc2, CONV_KERNEL),
        Binding("sa.conv1.weight", layer.conv1, CONV_KERNEL),
    ]


# -- a planted bug: the max-pooled branch forgotten --------------------------------------------


def cbam_without_max_pool(channels):
    """A buggy port, written the way many published CBAM ports are (a function of a Keras
    tensor, layers built inline, sizes read from ``x.shape``): its channel attention feeds
    only the average-pooled features to the MLP."""
    import keras
    from keras import ops

    def cbam(x):
        c = x.shape[-1]
        fc1 = keras.layers.Conv2D(max(c // REDUCTION, 1), 1, use_bias=False, name="fc1")
        fc2 = keras.layers.Conv2D(c, 1, use_bias=False, name="fc2")
        average = ops.mean(x, axis=(1, 2), keepdims=True)
        x = x * ops.sigmoid(fc2(ops.relu(fc1(average))))
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        conv1 = keras.layers.Conv2D(1, 7, padding="same", use_bias=False, name="conv1")
        return x * ops.sigmoid(conv1(pooled))

    return cbam


# -- bug hypotheses: CBAM with a step changed (NCHW tensors, the reference's weights) --------


def _average_pool(x):
    return (x.mean(dim=(2, 3), keepdim=True),)


def _max_pool(x):
    return (x.amax(dim=(2, 3), keepdim=True),)


def _both_pools(x):
    return (*_average_pool(x), *_max_pool(x))


def _channel_then_spatial(channel, spatial, x):
    return spatial(channel(x))


def _spatial_then_channel(channel, spatial, x):
    return channel(spatial(x))


def _family(steps: dict):
    """CBAM with some of its steps (pools, order) replaced."""
    pools = steps.get("pools", _both_pools)
    order = steps.get("order", _channel_then_spatial)

    def forward(module, x):
        ca = module.ca

        def channel(x):
            logits = sum(ca.fc2(ca.fc1(p).relu()) for p in pools(x))
            return logits.sigmoid() * x

        def spatial(x):
            return module.sa(x) * x

        return order(channel, spatial, x)

    return forward


MAX_POOL_MISSING = stepped(
    "cbam.max-pool-missing",
    "channel attention without its max-pooled branch",
    "the channel attention's MLP sees only the average-pooled features: the max-pooled "
    "branch is missing (sigmoid(mlp(avg)) instead of sigmoid(mlp(avg) + mlp(max)))",
    _family,
    pools=_average_pool,
)

VARIANTS = (
    MAX_POOL_MISSING,
    stepped(
        "cbam.average-pool-missing",
        "channel attention without its average-pooled branch",
        "the channel attention's MLP sees only the max-pooled features: the average-pooled "
        "branch is missing",
        _family,
        pools=_max_pool,
    ),
    stepped(
        "cbam.spatial-before-channel",
        "spatial attention before channel attention",
        "the two attentions run in the other order: spatial first, then channel",
        _family,
        order=_spatial_then_channel,
    ),
)


# -- the pair ---------------------------------------------------------------------------------


def _reference(channels: int):
    return reference_class()(channels, REDUCTION)


def _port(channels: int):
    return port_class()(REDUCTION)


def build():
    from parity.core.layout import register_bindings
    from parity.core.spec import ModulePair

    register_bindings(port_class())(bindings)
    return ModulePair(
        name="cbam",
        make_reference=_reference,
        make_port=_port,
        min_channels=SIZE.min_channels,
        variants=VARIANTS,
        roles=ROLES,
    )


def flops(shape) -> float:
    """The shared MLP on two pooled vectors and the 7x7 convolution, multiply-adds times two."""
    b, c, h, w = shape
    hidden = hidden_channels(c, REDUCTION)
    return 2.0 * b * (2 * 2 * c * hidden + h * w * 2 * KERNEL_SIZE**2)


PAIR = PairDefinition(
    name="cbam",
    summary="Woo et al.'s convolutional block attention",
    order=3,
    size=SIZE,
    build=build,
    planted=lambda: (
        PlantedBug("max-pooled branch missing", cbam_without_max_pool, MAX_POOL_MISSING),
    ),
    bench=BenchSpec(shapes=((1, 256, 64, 64), (1, 256, 96, 96), (4, 256, 32, 32)), flops=flops),
    checkpoint=CheckpointSpec(
        from_state=lambda read: {"channels": read("ca.fc1.weight", 1)},
        from_keras=lambda kernel: {"channels": kernel("convolutional_block_attention")[2]},
        make_layer=_port,
    ),
)
