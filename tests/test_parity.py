"""The port matches the reference, forward and backward, across random shapes.

The properties live in the package (``parity.frontends.pytest.properties``), so that ``pytest
--parity-port`` runs them from any repository; here they run against every registered pair's bundled
ports (``parity/pairs/``: both data formats, and the chunked PAM), or against yours:
``pytest --parity-port MODULE:FACTORY``.
"""

from parity.frontends.pytest.properties import (  # noqa: F401 -- collected from here
    test_gradients_match_reference,
    test_outputs_match_reference,
)
