"""First divergence: a failing head is located at the sub-module where its port first differs,
with the modules before it within the policy; a faithful head has none."""

from __future__ import annotations

from dataclasses import replace

import pytest

from parity.core import registry
from parity.core.strategies import Example
from parity.diagnosis.divergence import locate
from parity.run.engine import Checker
from tests.power.head_ports import HeadKerasDefaultEpsilon, HeadNoReLUAfterNorm

HEAD = registry.pair("head")

# Batch 2, H != W, H*W off multiples of 8, channels off multiples of 8 (the head needs 32+).
EXAMPLE = Example(batch=2, channels=36, height=5, width=3, scale=1.0, seed=3)


def test_a_faithful_head_has_no_divergence():
    divergence = locate(Checker(HEAD), EXAMPLE)
    assert divergence.first is None
    # Every parameterised module of the head is judged: 4 conv+norm blocks, PAM's three
    # convolutions and PAM itself, CAM, the three classifiers; then the first output.
    assert len(divergence.modules) == 17
    assert divergence.modules[-1].path == ""
    assert "within the policy" in divergence.describe()


@pytest.mark.parametrize(
    ("port", "first", "before", "description", "trap"),
    [
        # The norm at Keras' epsilon: the first BatchNorm, right after its convolution.
        (HeadKerasDefaultEpsilon, "conv5a.1", 1, "BatchNorm2d eps 1e-05", "BatchNorm epsilon"),
        # conv51 without its ReLU: conv51's own output is the norm's, before the ReLU, so
        # the divergence shows where the unrectified values are first read; no layer trap
        # explains it (a missing activation is the port's, not a layer's).
        (HeadNoReLUAfterNorm, "conv6.1", 13, "Conv2d 1x1", None),
    ],
)
def test_a_planted_head_bug_is_located(port, first, before, description, trap):
    divergence = locate(Checker(replace(HEAD, make_port=port)), EXAMPLE)
    assert divergence.first is not None
    assert divergence.first.path == first
    assert divergence.first.description == description
    assert divergence.first.comparison.ratio > 10 * divergence.first.comparison.allowed_ratio
    assert len(divergence.modules) == before + 1
    assert all(m.passed for m in divergence.modules[:-1])
    assert divergence.describe().startswith(f"first divergence: {first} ({description}): ")
    assert (divergence.first.trap and divergence.first.trap.name) == trap
