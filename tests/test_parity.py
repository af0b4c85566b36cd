"""The port matches the reference, forward and backward, across random shapes.

The port is the bundled one (both data formats), or yours: ``pytest --port MODULE:FACTORY``.
"""

from dataclasses import replace
from functools import cache

from hypothesis import event, given
from hypothesis import strategies as st

from impl_keras import PositionAttention
from parity.assertions import assert_parity
from parity.spec import CAM, HEAD, PAM, channels_first, pair_for_port
from parity.weight_map import read_weight_map

# The memory-lean PAM is one more port: blocks of 7 query positions leave a remainder block
# whenever H*W is not a multiple of 7.
PAM_CHUNKED = replace(
    PAM, name="pam-chunked", make_port=lambda channels: PositionAttention(chunk_size=7)
)


@cache
def pairs_under_test(port, weight_map, data_format):
    if port is None:
        bundled = tuple(pair for p in (PAM, CAM, HEAD) for pair in (p, channels_first(p)))
        return (*bundled, PAM_CHUNKED, channels_first(PAM_CHUNKED))
    mapping = read_weight_map(weight_map) if weight_map else None
    flags = [f"--port {port.split('=')[-1]}"]
    flags += [f"--weight-map {weight_map}"] if weight_map else []
    flags += [f"--data-format {data_format}"] if data_format else []
    return (
        pair_for_port(port, weight_map=mapping, data_format=data_format, origin=" ".join(flags)),
    )


def pytest_generate_tests(metafunc):
    if "pair" in metafunc.fixturenames:
        option = metafunc.config.getoption
        pairs = pairs_under_test(option("port"), option("weight_map"), option("port_data_format"))
        metafunc.parametrize("pair", pairs, ids=[p.name for p in pairs])


def draw_example(data, pair):
    example = data.draw(pair.examples(), label="example")
    event(f"batch {'>= 2' if example.batch >= 2 else '1'}")
    event(f"H*W {'off' if (example.height * example.width) % 8 else 'on'} multiples of 8")
    return example


@given(data=st.data())
def test_outputs_match_reference(pair, data):
    assert_parity(pair, draw_example(data, pair), gradients=False)


@given(data=st.data())
def test_gradients_match_reference(pair, data):
    """Gradients w.r.t. the input and every parameter, for a random cotangent."""
    example = draw_example(data, pair)
    report = assert_parity(pair, example, gradients=True)
    parameters = dict(pair.make_reference(example.channels).named_parameters())
    assert {c.name for c in report.comparisons} >= {"grad[input]"} | {
        f"grad[{name}]" for name in parameters
    }
