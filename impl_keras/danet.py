"""Keras 3 port of the whole DANet (Fu et al., CVPR 2019): dilated ResNet, head, upsampling.

Same structure as ``reference_torch.DANet``: the backbone (``impl_keras.resnet``), the
dual attention head (``impl_keras.DANetHead``) on its output, and the three predictions
resized to the input with PyTorch's ``align_corners=True`` (``impl_keras.upsampling``).
"""

from __future__ import annotations

import keras
from keras import ops

from impl_keras.attention import _standardize_data_format
from impl_keras.head import DANetHead
from impl_keras.resnet import BLOCKS, DilatedResNet
from impl_keras.upsampling import resize_bilinear_align_corners


@keras.saving.register_keras_serializable(package="danet_parity")
class DANet(keras.layers.Layer):
    """DANet: segmentation with position and channel attention on a dilated ResNet.

    Args:
        nclass: classes (channels of each output).
        backbone: ``"resnet50"`` or ``"resnet101"``.
        width: the backbone's base channels (64 in the original; narrower keeps the
            structure, for tests).
        deep_stem: the backbone's three-convolution stem (the original's default).
        blocks: bottlenecks per stage, replacing the backbone's (for tests).
        dropout_rate: of the head's channel dropout (0.1).
        data_format: ``"channels_last"`` (default) or ``"channels_first"``.

    Call arguments:
        inputs: ``(batch, H, W, 3)`` (or ``(batch, 3, H, W)``), any H, W >= 1.
        training: BatchNorm on batch statistics and dropout active when true.

    Output:
        ``(fused, position_branch, channel_branch)``, each ``(batch, H, W, nclass)``.
    """

    backbone_class = DilatedResNet  # the backbone layer, replaceable by a subclass

    def __init__(
        self,
        nclass,
        backbone="resnet50",
        width=64,
        deep_stem=True,
        blocks=None,
        dropout_rate=0.1,
        data_format=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if backbone not in BLOCKS:
            raise ValueError(f"Expected one of {set(BLOCKS)}. Received: backbone={backbone!r}")
        self.nclass = nclass
        self.backbone = backbone
        self.width = width
        self.deep_stem = deep_stem
        self.blocks = tuple(blocks) if blocks is not None else None
        self.dropout_rate = dropout_rate
        self.data_format = _standardize_data_format(data_format)

    def build(self, input_shape):
        fmt = dict(data_format=self.data_format, dtype=self.dtype_policy)
        self.pretrained = self.backbone_class(
            self.blocks or BLOCKS[self.backbone],
            self.width,
            self.deep_stem,
            name="pretrained",
            **fmt,
        )
        self.head = DANetHead(self.nclass, self.dropout_rate, name="head", **fmt)
        self.pretrained.build(input_shape)
        channels = self.pretrained.out_channels
        features = (
            (None, None, None, channels)
            if self.data_format == "channels_last"
            else (None, channels, None, None)
        )
        self.head.build(features)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.layers.InputSpec(
            ndim=4, axes={channel_axis: input_shape[channel_axis]}
        )

    def call(self, inputs, training=None):
        shape = ops.shape(inputs)
        size = shape[1:3] if self.data_format == "channels_last" else shape[2:4]
        features = self.pretrained(inputs, training=training)  # (batch, ~H/8, ~W/8, 32w)
        return tuple(
            resize_bilinear_align_corners(y, size, self.data_format)  # (batch, H, W, nclass)
            for y in self.head(features, training=training)
        )

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[-1 if self.data_format == "channels_last" else 1] = self.nclass
        return (tuple(shape),) * 3

    def get_config(self):
        return {
            **super().get_config(),
            "nclass": self.nclass,
            "backbone": self.backbone,
            "width": self.width,
            "deep_stem": self.deep_stem,
            "blocks": self.blocks,
            "dropout_rate": self.dropout_rate,
            "data_format": self.data_format,
        }
