"""What users run: the ``parity`` command (``cli/``), the pytest plugin (``pytest/``), reports,
the benchmark and checkpoint conversion. Imports every layer below it, never a framework
itself.
"""
