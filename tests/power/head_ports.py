"""Head ports with the classic bugs of ported heads (BatchNorm settings, padding, output
order, a missing ReLU, a converter that swaps running statistics), each on top of the
bundled head, and two faithful ones that leave ``training`` to Keras. Each class is its own
factory: ``--port tests.power.head_ports:HeadNoReLUAfterNorm``."""

from __future__ import annotations

import keras
from keras import ops

from impl_keras import DANetHead
from impl_keras.head import ConvNormReLU
from parity.core.layout import Binding, bindings_for
from parity.pairs.head import out_channels as head_out_channels

BLOCKS = ("conv5a", "conv5c", "conv51", "conv52")


class _Head(DANetHead):
    def __init__(self, channels=None, **kwargs):
        kwargs.setdefault("out_channels", head_out_channels(channels) if channels else 5)
        super().__init__(**kwargs)

    def norms(self):
        return [getattr(self, name).norm for name in BLOCKS]


class HeadKerasDefaultEpsilon(_Head):
    """BatchNorm left at Keras' default epsilon, 1e-3, where PyTorch's is 1e-5."""

    def build(self, input_shape):
        super().build(input_shape)
        for norm in self.norms():
            norm.epsilon = 1e-3


class HeadMomentumUnconverted(_Head):
    """PyTorch's momentum 0.1 copied as Keras' momentum: the running statistics barely keep
    their past (Keras' momentum is PyTorch's 1 - momentum)."""

    def build(self, input_shape):
        super().build(input_shape)
        for norm in self.norms():
            norm.momentum = 0.1


class _StockBatchNormBlock(ConvNormReLU):
    def make_norm(self, axis):
        return keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5, name="norm")


class HeadStockKerasBatchNorm(_Head):
    """Keras' own BatchNormalization (right epsilon and momentum): its running variance
    takes the biased batch variance, PyTorch's the unbiased one."""

    conv_block = _StockBatchNormBlock


class HeadValidPadding(_Head):
    """The 3x3 convolutions with padding "valid" where PyTorch pads by 1."""

    def build(self, input_shape):
        super().build(input_shape)
        for name in BLOCKS:
            getattr(self, name).conv.padding = "valid"


class HeadOutputsReordered(_Head):
    """The three outputs in another order: (position, channel, fused)."""

    def call(self, inputs, training=None):
        fused, position, channel = super().call(inputs, training=training)
        return position, channel, fused


class HeadNoReLUAfterNorm(_Head):
    """conv51 without its ReLU after the norm."""

    def build(self, input_shape):
        super().build(input_shape)
        block = self.conv51
        block.call = lambda x, training=None: block.norm(block.conv(x), training=training)


class HeadReLUBeforeNorm(_Head):
    """A faithful-looking refactor that is not: ReLU applied before the norm in conv5a."""

    def build(self, input_shape):
        super().build(input_shape)
        block = self.conv5a
        block.call = lambda x, training=None: block.norm(ops.relu(block.conv(x)), training=training)


def swapped_running_statistics(port, reference):
    """A converter that loads running_mean into moving_variance and the other way round."""
    swapped = []
    for b in bindings_for(port.layer):
        if b.torch_key.endswith("running_mean"):
            b = Binding(b.torch_key.replace("running_mean", "running_var"), b.variable, b.layout)
        elif b.torch_key.endswith("running_var"):
            b = Binding(b.torch_key.replace("running_var", "running_mean"), b.variable, b.layout)
        swapped.append(b)
    return swapped


# Faithful: Keras carries ``training`` from a layer's call to the layers it calls, so many
# ports never pass it on.


def _branches(head, inputs):
    position = head.conv51(head.sa(head.conv5a(inputs)))
    channel = head.conv52(head.sc(head.conv5c(inputs)))
    return head.conv8(position + channel), head.conv6(position), head.conv7(channel)


class HeadTrainingFromContext(_Head):
    """Faithful: ``call`` takes no ``training``; Keras' call context gives it to the
    BatchNorm and dropout layers inside."""

    def call(self, inputs):
        return _branches(self, inputs)


class HeadTrainingNotPassedOn(_Head):
    """Faithful: ``call`` takes ``training`` and leaves it to Keras to pass on."""

    def call(self, inputs, training=None):
        return _branches(self, inputs)
