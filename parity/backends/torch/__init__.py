"""The PyTorch side: the reference as the engine runs it (``reference``), its instruments
(``error_bound``: the running error bound; ``rounding``: simulated float32 rounding), the
hypotheses written in PyTorch (``variants``, ``traps``) and checkpoint files. Imports
PyTorch (inside functions, where a pair file imports it), ``parity.core`` and the protocol.
"""
