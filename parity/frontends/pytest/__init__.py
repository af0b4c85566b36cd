"""The pytest plugin (``plugin``, entry point ``pytest11``) and the parity properties it runs
(``properties``). Imports the layers below; pytest and Hypothesis are its own frameworks.
"""
