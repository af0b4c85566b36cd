"""The Keras 3 port of DANet's attention modules, head, backbone and whole network."""

from impl_keras.attention import ChannelAttention, PositionAttention
from impl_keras.danet import DANet
from impl_keras.head import DANetHead, TorchBatchNormalization
from impl_keras.resnet import DilatedResNet
from impl_keras.upsampling import resize_bilinear_align_corners

__all__ = [
    "ChannelAttention",
    "DANet",
    "DANetHead",
    "DilatedResNet",
    "PositionAttention",
    "TorchBatchNormalization",
    "resize_bilinear_align_corners",
]
