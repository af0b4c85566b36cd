"""The localization's power: for bugs of the catalogue and bugs outside it, the first line of
the reference's forward the port never computes is the line the bug changes, and the relation
printed there is the one the bug makes; a faithful port computes every line.

Each port is checked on the localization example itself (a failure there is the verdict the
property reaches on any example of its kind); the suite's other power tests shrink the
catalogue's ports through the property. The port's tensors are listed on TensorFlow only.
"""

import json
import warnings
from dataclasses import replace

import jsonschema
import keras
import pytest

from parity.core import registry
from parity.core.spec import with_port
from parity.core.strategies import Example
from parity.diagnosis.explain import localized
from parity.diagnosis.localize import localization_example, localize
from parity.frontends.report import SCHEMA
from parity.run.assertions import checker_for
from tests.helpers import run_cli
from tests.power import ports, wild_ports

PAM = registry.pair("pam")
CAM = registry.pair("cam")
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"
ATTENTION = "attention = self.softmax(energy)"
PAM_OUT = "out = torch.bmm(value, attention.permute(0, 2, 1))"
CAM_OUT = "out = torch.bmm(attention, value).view(B, C, H, W)"
ENERGY = "energy = torch.bmm(query, key)"
RESULT = "return self.gamma * out + x"
CAM_ATTENTION = "attention = self.softmax(energy_new)"

# port -> (pair, the reference line it first misses, words of the relation printed there)
CATALOGUE = {
    ports.PAMSoftmaxWrongAxis: (PAM, ATTENTION, "softmax over axis 1"),
    ports.PAMAttentionUntransposed: (PAM, PAM_OUT, "transposed (its last two axes)"),
    ports.PAMNoResidual: (PAM, RESULT, "plus -1x the input x"),
    ports.PAMReadsNHWCAsNCHW: (PAM, ENERGY, None),
    ports.PAMFlattensColumnMajor: (PAM, ENERGY, None),
    ports.PAMMixesBatch: (PAM, ENERGY, None),
    ports.CAMWithoutMaxMinus: (CAM, "energy_new = torch.max(energy, -1", None),
    ports.CAMAttentionUntransposed: (CAM, CAM_OUT, "transposed (its last two axes)"),
    ports.CAMReadsNHWCAsNCHW: (CAM, ENERGY, None),
    ports.CAMSoftmaxWrongAxis: (CAM, "attention = self.softmax(energy_new)", "softmax over axis 1"),
}
FAITHFUL = {ports.PAMEinsum: PAM, ports.CAMEinsum: CAM, ports.CAMShiftedByRowMean: CAM}
WILD_RELATIONS = {
    "PAMScaledLikeATransformer": "which is 1/2 = 1/sqrt(4)",
    "PAMQueryPreScaled": "0.5x the reference's value of `energy",
    "pam_energy_over_sqrt_channels": "which is 1/sqrt(32); 32 = C of the example",
    "CAMEnergyOverPositions": "which is 1/35; 35 = H*W of the example",
    "CAMGammaXInside": "plus 0.279x the input x (0.279 is gamma squared)",
    "CAMResidualDoubled": "plus 1x the input x",
    "PAMOnePlusGamma": "plus 1x `out = out.view(B, C, H, W)`",
    "CAMMaxOverColumns": "softmax over axis 1",
}
"""Wild bugs and the relation their localization must print (the others print a line and
the port's operation to look at, or the line alone)."""
FAITHFUL_EXAMPLES = (Example(1, 8, 1, 1, 1.0, 1), Example(2, 16, 6, 3, 2.0, 2))

tensorflow_only = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="the port's tensors are listed on TensorFlow only"
)


def _checker(pair, port):
    return checker_for(replace(with_port(pair, port), name=f"{pair.name}:{port.__name__}"))


def _localized(pair, port):
    checker = _checker(pair, port)
    example = localization_example(checker, Example(1, 16, 2, 3, 1.0, 0))
    assert not checker.check(example).passed, f"{port.__name__} passes the example"
    return localize(checker, example)


@tensorflow_only
@pytest.mark.parametrize("port", CATALOGUE, ids=lambda port: port.__name__)
def test_a_catalogued_bug_is_localized_at_its_line(port):
    pair, line, relation = CATALOGUE[port]
    found = _localized(pair, port)
    assert found.first_wrong is not None, found.describe()
    assert line in found.first_wrong.source, found.describe()
    if relation is not None:
        assert found.relation is not None and relation in found.relation.words, found.describe()


@tensorflow_only
@pytest.mark.parametrize("port", FAITHFUL, ids=lambda port: port.__name__)
def test_a_faithful_port_computes_every_line(port):
    checker = _checker(FAITHFUL[port], port)
    found = localize(checker, Example(1, 16, 2, 3, 1.0, 0))
    assert found.first_wrong is None, found.describe()
    assert "computes every line's value" in found.describe()


@tensorflow_only
def test_the_command_prints_where_an_unseen_bug_first_goes_wrong(capsys, tmp_path):
    """A PAM scaled as transformers scale their energy, outside the catalogue: unexplained by
    the hypotheses, localized at the softmax with the scale named, in the report too."""
    port = "tests.power.wild_ports:PAMScaledLikeATransformer"
    argv = [
        "check",
        "pam",
        "--port",
        port,
        "--example",
        "1,16,1,2,1.0,0",
        "--report",
        str(tmp_path),
    ]
    status, out, _ = run_cli(argv, capsys)
    assert status == 1, out
    assert f"first line it never computes: attention.py:53 `{ATTENTION}`" in out, out
    assert "holds 0.5x the reference's value of `energy = torch.bmm(query, key)`" in out, out
    assert "which is 1/2 = 1/sqrt(4)" in out, out
    assert "look at the port's RealDiv at tests/power/wild_ports.py:" in out, out
    report = json.loads((tmp_path / "pam" / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    where = report["localization"]
    assert where["first_wrong"] == {
        "where": "attention.py:53",
        "source": ATTENTION + "  # rows sum to 1",
    }
    assert where["look_at"][0]["op"] == "RealDiv" and "1/sqrt(4)" in where["relation"]


@tensorflow_only
@pytest.mark.parametrize("name", wild_ports.EXPECTED)
def test_a_wild_port_gets_its_verdict_and_its_line(name):
    """Bugs outside the catalogue, in the styles published ports use: each fails, and is
    localized at the line it changes; a faithful one that looks wrong passes and computes
    every line."""
    module, kind, line = wild_ports.EXPECTED[name]
    pair = registry.pair(module)
    port = getattr(wild_ports, name)
    if kind == "faithful":
        checker = _checker(pair, port)
        example = localization_example(checker, FAITHFUL_EXAMPLES[0])
        for each in (example, *FAITHFUL_EXAMPLES):
            report = checker.check(each)
            assert report.passed, f"{name} on {each}: {report.describe_failures()}"
        found = localize(checker, example)
        assert found.first_wrong is None, found.describe()
        return
    found = _localized(pair, port)
    assert found.first_wrong is not None, found.describe()
    assert line in found.first_wrong.source, found.describe()
    if name in WILD_RELATIONS:
        relation = found.relation.words if found.relation else ""
        assert WILD_RELATIONS[name] in relation, found.describe()


@tensorflow_only
def test_another_pair_is_localized_with_no_code_of_its_own():
    """CBAM (its reference defined in its pair file): the port that forgets the max-pooled
    branch misses the line that computes it."""
    from parity.pairs.cbam import cbam_without_max_pool

    found = _localized(registry.pair("cbam"), cbam_without_max_pool)
    assert found.first_wrong is not None, found.describe()
    assert found.first_wrong.source.startswith("maximum = self.fc2("), found.describe()


@pytest.mark.skipif(ON_TENSORFLOW, reason="the note is for the other backends")
def test_another_backend_says_it_does_not_localize():
    checker = _checker(PAM, ports.PAMSoftmaxWrongAxis)
    found, note = localized(checker, Example(1, 16, 2, 3, 1.0, 0))
    assert found is None
    assert "not localized on Keras'" in note and "TensorFlow backend" in note


@tensorflow_only
def test_an_unshifted_logsumexp_softmax_is_rejected_and_localized(capsys):
    """The softmax as exp(z - log(sum(exp(z)))) without the row max: the property's own
    examples find where it overflows, and the softmax's line is the first it misses, said
    with no numpy warning about the port's infinities."""
    port = "tests.power.wild_ports:CAMUnshiftedLogSumExp"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        status, out, _ = run_cli(["check", "cam", "--port", port], capsys)
    assert status == 1, out
    assert "NaN or infinite" in out, out
    assert f"first line it never computes: attention.py:82 `{CAM_ATTENTION}`" in out, out
    ours = [w for w in caught if "/parity/" in w.filename or "numpy" in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
