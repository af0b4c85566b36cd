"""The ``parity`` command: ``main`` runs a command and prints what it found; ``arguments``,
``selection`` and ``writable`` check what it was asked before any framework is imported;
``interrupts`` ends it on Ctrl-C. Imports the layers below and the other frontends.
"""
