"""The bundled module pairs, a file each: ``PAIR = parity.core.registry.PairDefinition(...)``.

A file here holds everything specific to its pair (reference and port factories, parameter
roles, bug hypotheses, checkpoint sizing, bench shapes and FLOPs, memory); ``parity.core.registry``
finds every file by itself. Files import no framework at module level.
"""
