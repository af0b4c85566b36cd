"""Keras 3, on whichever backend it runs: building a port (``build``), running it and its
gradients (``autodiff``), and the protocol's implementation (``framework``). Imports Keras
and the backends' own frameworks, ``parity.core`` and the protocol.
"""
