"""The report's pictures show the bug: a readable example, every panel in its own colour
range, the error map from zero, and the worst tensor named and drawn."""

import json

import numpy as np
import pytest
from matplotlib.axes import Axes

from parity.core.policy import compare
from parity.core.strategies import Example
from parity.frontends.report import draw_pictures
from parity.run.engine import ExampleReport
from tests.helpers import run_cli


def test_every_panel_has_its_own_colour_range_and_errors_start_at_zero(tmp_path, monkeypatch):
    """A port off by 0.45 beyond the reference's range is drawn in its own range, not
    clipped into the reference's (where it looked identical to it)."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(-0.1, 0.1, size=(2, 3, 4, 5))
    port = truth + 0.45
    comparisons = compare({"output": truth}, {"output": truth}, {"output": port})
    report = ExampleReport(
        "pam",
        Example(2, 3, 4, 5, 1.0, 0),
        comparisons,
        truth={"output": truth},
        reference={"output": truth},
        port={"output": port},
        x=np.zeros_like(truth),
    )
    drawn = []
    imshow = Axes.imshow

    def recording(self, data, **kwargs):
        drawn.append((np.asarray(data), kwargs))
        return imshow(self, data, **kwargs)

    monkeypatch.setattr(Axes, "imshow", recording)
    files = draw_pictures(report, tmp_path, "test", residual=True)
    assert files == [
        "error_map.png",
        "channel_errors.png",
        "side_by_side.png",
        "side_by_side_shared.png",
    ]
    (_, error_options), *panels = drawn
    assert error_options["vmin"] == 0
    own, shared = panels[:3], panels[3:]
    (reference, reference_options), (shown_port, port_options), (_, difference_options) = own
    assert reference_options["vmax"] == pytest.approx(reference.max())
    assert port_options["vmin"] == pytest.approx(shown_port.min())  # not the reference's range
    assert port_options["vmin"] > reference_options["vmax"]
    assert difference_options["vmin"] == -difference_options["vmax"]
    # One scale for the three panels: the port's shift shows as a change of colour.
    scales = {(options["vmin"], options["vmax"]) for _, options in shared}
    assert len(scales) == 1 and len(shared) == 3
    ((low, high),) = scales
    assert low <= reference.min() and high >= shown_port.max()


def test_a_planted_layout_bug_is_drawn_on_a_readable_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    port = "tests.power.ports:PAMReadsNHWCAsNCHW"
    status, out, _ = run_cli(
        ["check", "pam", "--port", port, "--example", "1,8,1,2,1.0,0", "--report", "report"],
        capsys,
    )
    assert status == 1, out
    report = json.loads((tmp_path / "report" / "pam" / "report.json").read_text())
    drawn = report["pictures_of"]
    assert (drawn["example"]["batch"], drawn["example"]["height"], drawn["example"]["width"]) == (
        2,
        9,
        12,
    )
    assert drawn["passed"] is False and drawn["activation"] == "output"
    assert report["worst_example"] == report["counterexample"]
    assert drawn["worst_tensor"].startswith("grad[")  # a kernel's gradient is off the most
    assert "worst_tensor.png" in report["pictures"]
    for name in report["pictures"]:
        assert (tmp_path / "report" / "pam" / name).stat().st_size > 0
