"""What ``parity check`` selects, as a library call: pairs, or a typed error whose message
is the command's one line."""

import pytest

from parity.core.errors import CannotCheck
from parity.frontends.cli.selection import Selection, select_pairs


def test_registered_pairs_in_order_and_a_size_variant():
    assert [p.name for p in select_pairs(Selection(modules=("cam", "pam")))] == ["cam", "pam"]
    (full,) = select_pairs(Selection(modules=("danet",), variant="resnet50"))
    assert full.name == "danet" and full.origin.flags() == "--variant resnet50"


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (Selection(modules=("sam",)), "unknown module 'sam'"),
        (Selection(modules=("pam",), spec="tests.power.ports:PAM"), "either --spec or module"),
        (Selection(modules=("pam", "cam"), port="tests.power.ports:PAMEinsum"), "checks one"),
        (Selection(modules=("pam",), variant="resnet50"), "pam has no variants"),
        (Selection(variant="resnet50"), "--variant checks one module"),
        (Selection(modules=("pam",), absent=("*.bias",)), "give --port too"),
        (Selection(modules=("pam",), port="tests.power.nowhere:PAM"), "tests.power.nowhere"),
    ],
)
def test_what_selects_nothing_cannot_be_checked(selection, message):
    with pytest.raises(CannotCheck, match=message):
        select_pairs(selection)
