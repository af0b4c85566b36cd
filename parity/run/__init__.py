"""Running checks: one example through the reference and the port (``engine``), one driver
for a budget of examples (``driver``: search, shrink, confirm the replay), training steps
(``training``) and assertions for pytest (``assertions``). Imports ``parity.core`` and
``parity.backends``, never a framework itself.
"""
