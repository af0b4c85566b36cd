"""Why a port fails: the known hypotheses tried against a counterexample (``diagnose``, the
entry point), the tensors' pattern, crashes explained by their type, and where inside a
model it first diverges (``divergence``); ``explain`` gives both. Imports the layers below
(``core``, ``backends``, ``run``), never a framework itself.
"""
