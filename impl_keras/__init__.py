"""The Keras 3 port of DANet's attention modules."""

from impl_keras.attention import ChannelAttention, PositionAttention

__all__ = ["ChannelAttention", "PositionAttention"]
