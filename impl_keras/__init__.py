"""The Keras 3 port of DANet's attention modules and head."""

from impl_keras.attention import ChannelAttention, PositionAttention
from impl_keras.head import DANetHead, TorchBatchNormalization

__all__ = ["ChannelAttention", "DANetHead", "PositionAttention", "TorchBatchNormalization"]
