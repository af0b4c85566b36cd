"""A module pair of your own: a squeeze-and-excitation block (Hu et al., CVPR 2018).

Run the same property checks on it with
``parity check --spec examples.squeeze_excitation:SE_PAIR``.
"""

import keras
import torch
from keras import ops
from torch import nn

from parity import ModulePair, mapped_bindings


class SEBlock(nn.Module):
    """The PyTorch reference: channel weights from globally pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))  # (B, C)
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * weights[:, :, None, None]


class SqueezeExcite(keras.layers.Layer):
    """The Keras port, channels-last."""

    def __init__(self, channels=None, reduction=4, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        self.fc1 = keras.layers.Dense(channels // self.reduction, activation="relu", name="fc1")
        self.fc2 = keras.layers.Dense(channels, activation="sigmoid", name="fc2")
        self.fc1.build((None, channels))
        self.fc2.build((None, channels // self.reduction))

    def call(self, x):
        weights = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))  # (B, C)
        return x * weights[:, None, None, :]


class SqueezeExciteForgetsTheSigmoid(SqueezeExcite):
    """A buggy port, for the record: the excitation is not squashed."""

    def build(self, input_shape):
        super().build(input_shape)
        self.fc2.activation = keras.activations.linear


SE_PAIR = ModulePair(
    name="se",
    make_reference=SEBlock,
    make_port=SqueezeExcite,
    bindings=mapped_bindings(),  # fc1.weight -> fc1/kernel, ... by name, order and shape
    min_channels=4,
    max_channels=32,
)
