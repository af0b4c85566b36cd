"""The report of a check: JSON (machine-readable, stable fields) and pictures of the worst
example, so that a transpose bug shows at a glance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity.frontends.html_report import write_html
from parity.run.engine import ExampleReport

SCHEMA_VERSION = 1

_COMPARISON = {
    "type": "object",
    "required": [
        "name",
        "shape",
        "max_abs_error",
        "relative_error",
        "reference_error",
        "ratio",
        "allowed_ratio",
        "floor",
        "worst_index",
        "mismatched",
        "scale",
        "passed",
    ],
    "properties": {
        "name": {"type": "string", "description": "output, grad[input] or grad[<parameter>]"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "max_abs_error": {"type": "number", "description": "max |port - truth|"},
        "relative_error": {"type": "number", "description": "e_port: max |port - truth| / scale"},
        "reference_error": {"type": "number", "description": "e_ref: the float32 reference's own"},
        "ratio": {"type": "number", "description": "e_port / max(e_ref, floor)"},
        "allowed_ratio": {"type": "number"},
        "floor": {"type": "number", "description": "max(floor ulps, simulated float32 noise)"},
        "worst_index": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "index of max |port - truth| in the reference layout",
        },
        "mismatched": {"type": "integer", "description": "elements beyond the allowed error"},
        "scale": {"type": "number"},
        "passed": {"type": "boolean"},
        "nonfinite": {"type": "integer", "description": "NaN or infinite elements of the port's"},
    },
}
_EXAMPLE = {
    "type": "object",
    "required": ["batch", "channels", "height", "width", "scale", "seed"],
    "properties": {k: {"type": "integer"} for k in ("batch", "channels", "height", "width", "seed")}
    | {"scale": {"type": "number"}},
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "danet-parity check report",
    "type": "object",
    "required": [
        "schema_version",
        "module",
        "port",
        "data_format",
        "verdict",
        "examples_run",
        "policy",
        "tensors",
        "counterexample",
        "replay",
        "comparisons",
        "diagnosis",
        "error",
        "weight_map",
        "pictures",
        "worst_example",
        "pictures_of",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "module": {"type": "string", "description": "a registered pair's name, or a user pair's"},
        "port": {"type": "string", "description": "MODULE:FACTORY, or 'bundled'"},
        "data_format": {"enum": ["channels_last", "channels_first"]},
        "verdict": {"enum": ["pass", "fail"]},
        "examples_run": {"type": "integer"},
        "policy": {
            "type": "object",
            "description": "the tolerance policy judged by (TolerancePolicy's fields)",
            "required": ["factor", "floor_ulps"],
            "additionalProperties": {"type": "number"},
        },
        "tensors": {
            "type": "array",
            "description": "per tensor, the worst over all examples run",
            "items": {
                "type": "object",
                "required": ["name", "worst_ratio", "relative_error", "reference_error", "passed"],
                "properties": {
                    "name": {"type": "string"},
                    "worst_ratio": {"type": "number"},
                    "relative_error": {"type": "number"},
                    "reference_error": {"type": "number"},
                    "passed": {"type": "boolean"},
                },
            },
        },
        "counterexample": {
            "oneOf": [{"type": "null"}, _EXAMPLE],
            "description": "the minimal failing example Hypothesis shrank to",
        },
        "replay": {"type": ["string", "null"], "description": "a command that reproduces it"},
        "comparisons": {
            "type": "array",
            "items": _COMPARISON,
            "description": "every tensor of the counterexample (or worst example)",
        },
        "localization": {
            "type": ["object", "null"],
            "description": "where inside the module the port first goes wrong: the first "
            "line of the reference's forward it never computes (null where not localized)",
            "properties": {
                "example": {"type": "object"},
                "lines_matched": {"type": "integer"},
                "port_tensors": {"type": "integer"},
                "right_through": {"type": ["object", "null"]},
                "first_wrong": {"type": ["object", "null"]},
                "look_at": {"type": "array"},
                "relation": {"type": ["string", "null"]},
            },
        },
        "quantization": {
            "type": ["object", "null"],
            "description": "an int8 file's lines: each reference line, the file's tensor that "
            "holds it and the bits of its value kept; the first below the budget (null where "
            "the file is not int8)",
            "properties": {
                "example": {"type": "object"},
                "budget_bits": {"type": "number"},
                "lines": {"type": "array"},
                "first_past_budget": {"type": ["object", "null"]},
            },
        },
        "diagnosis": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["explained", "cause", "hypotheses"],
                    "properties": {
                        "explained": {"type": "boolean"},
                        "cause": {"type": "string"},
                        "suggestion": {"type": ["string", "null"]},
                        "hypotheses": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["hypothesis", "cause", "explains", "residual_ratio"],
                                "properties": {
                                    "hypothesis": {"type": "string"},
                                    "id": {
                                        "type": "string",
                                        "description": "the hypothesis' identity, stable "
                                        "when its words change",
                                    },
                                    "cause": {"type": "string"},
                                    "explains": {"type": "boolean"},
                                    "residual_ratio": {"type": ["number", "null"]},
                                    "suggestion": {"type": ["string", "null"]},
                                },
                            },
                        },
                    },
                },
            ]
        },
        "error": {
            "type": ["string", "null"],
            "description": "why the port could not be compared (crash, weights)",
        },
        "weight_map": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "reference parameter -> port weight path",
        },
        "pictures": {"type": "array", "items": {"type": "string"}},
        "worst_example": {
            "oneOf": [{"type": "null"}, _EXAMPLE],
            "description": "the example with the highest ratio of all run (the "
            "counterexample when parity fails)",
        },
        "pictures_of": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["example", "passed", "activation", "worst_tensor", "worst_ratio"],
                    "properties": {
                        "example": _EXAMPLE,
                        "passed": {"type": "boolean"},
                        "activation": {
                            "type": "string",
                            "description": "the tensor of error_map and side_by_side",
                        },
                        "worst_tensor": {
                            "type": "string",
                            "description": "the example's worst tensor (worst_tensor.png when "
                            "it is a parameter's gradient)",
                        },
                        "worst_ratio": {"type": "number"},
                    },
                },
            ],
            "description": "the example the pictures show: readable (batch 2, 9x12) where possible",
        },
    },
}


def build_report(
    *,
    module,
    port,
    data_format,
    passed,
    examples_run,
    policy,
    tally,
    example_report: ExampleReport | None,
    counterexample,
    replay,
    diagnosis,
    error,
    weight_map,
    pictures,
    worst_example=None,
    drawn: ExampleReport | None = None,
    localization: dict | None = None,
    quantization: dict | None = None,
) -> dict:
    tensors = [
        {
            "name": c.name,
            "worst_ratio": c.ratio,
            "relative_error": c.relative_error,
            "reference_error": c.reference_error,
            "passed": c.passed,
        }
        for c in tally.values()
    ]
    comparisons = (
        [] if example_report is None else [c.as_dict() for c in example_report.comparisons]
    )
    report = {
        "schema_version": SCHEMA_VERSION,
        "module": module,
        "port": port,
        "data_format": data_format,
        "verdict": "pass" if passed else "fail",
        "examples_run": examples_run,
        "policy": policy.as_dict(),
        "tensors": tensors,
        "counterexample": None if counterexample is None else counterexample._asdict(),
        "replay": replay,
        "comparisons": comparisons,
        "diagnosis": None if diagnosis is None else diagnosis.as_dict(),
        "error": error,
        "weight_map": weight_map,
        "pictures": pictures,
        "worst_example": None if worst_example is None else worst_example._asdict(),
        "pictures_of": None if drawn is None else _pictures_of(drawn),
        "localization": localization,
        "quantization": quantization,
    }
    return json.loads(json.dumps(report, default=_json_default), parse_constant=lambda _: None)


def _pictures_of(drawn: ExampleReport) -> dict:
    worst = drawn.worst()
    return {
        "example": drawn.example._asdict(),
        "passed": drawn.passed,
        "activation": _activation_to_show(drawn),
        "worst_tensor": worst.name,
        "worst_ratio": worst.ratio,
    }


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(report: dict, directory: Path) -> Path:
    path = directory / "report.json"
    text = json.dumps(report, indent=2, allow_nan=False, default=_json_default)
    path.write_text(text + "\n")
    return path


# -- pictures ---------------------------------------------------------------------------------


def _is_activation(c) -> bool:
    return len(c.shape) == 4 and (c.name.startswith("output") or c.name == "grad[input]")


def _activation_to_show(report: ExampleReport) -> str:
    """A failing output if there is one (for a residual module its own term shows a
    scramble of positions at a glance), else the activation-shaped tensor (B, C, H, W)
    with the worst ratio."""
    candidates = [c for c in report.comparisons if _is_activation(c)]
    outputs = [c for c in candidates if c.name.startswith("output") and not c.passed]
    return max(outputs or candidates, key=lambda c: c.ratio).name


def _worst_sample_and_channel(truth, port) -> tuple[int, int]:
    error = np.abs(port - truth)
    error = np.where(np.isfinite(error), error, np.inf)
    b, c = np.unravel_index(np.argmax(error.max(axis=(2, 3))), error.shape[:2])
    return int(b), int(c)


def _plain_colorbar(fig, image, ax, label=None):
    """A colour bar whose ticks carry their own exponent (no offset text over the title)."""
    from matplotlib import ticker

    bar = fig.colorbar(image, ax=ax, label=label, format=ticker.FormatStrFormatter("%.2g"))
    return bar


def draw_pictures(
    report: ExampleReport, directory: Path, title: str, *, residual: bool = False
) -> list[str]:
    """Pictures of one example, so that a bug shows at a glance:

    - error_map.png: the error per position (h, w) of the worst activation, from zero;
    - channel_errors.png: its error per channel;
    - side_by_side.png: reference, port and their difference for its worst sample and
      channel, each panel in its own colour range (a port off by half the reference's range
      is not clipped into looking like it). For a residual module (output = x + f(x)) the
      module's own term f(x): x would dominate both and hide a scramble;
    - worst_tensor.png: the example's worst tensor, when it is another one (a parameter's
      gradient, say).
    """
    import matplotlib

    matplotlib.use("Agg")

    name = _activation_to_show(report)
    truth, port = report.truth[name], report.port[name]
    scale = max(float(np.max(np.abs(truth))), 1e-300)
    error = np.abs(port - truth) / scale  # (B, C, H, W)
    error = np.where(np.isfinite(error), error, np.nan)
    b, c = _worst_sample_and_channel(truth, port)
    files = [
        _error_map(error, directory, f"{title}\n{name}: error per position"),
        _channel_errors(error, directory, f"{title}\n{name}: error per channel"),
    ]
    shown_truth, shown_port, what = truth[b, c], port[b, c], name
    if residual and name.startswith("output") and report.x is not None:
        shown_truth, shown_port = truth[b, c] - report.x[b, c], port[b, c] - report.x[b, c]
        what = f"{name} - x (the module's own term)"
    files.append(
        _side_by_side(
            shown_truth,
            shown_port,
            directory / "side_by_side.png",
            f"{title}\n{what}, sample {b}, channel {c} (its worst)",
        )
    )
    files.append(
        _side_by_side(
            shown_truth,
            shown_port,
            directory / "side_by_side_shared.png",
            f"{title}\n{what}, sample {b}, channel {c}: one colour scale for all three",
            shared=True,
        )
    )
    worst = report.worst()
    if worst.name != name:
        files.append(_worst_tensor(report, worst, directory, title))
    return files


def _worst_tensor(report: ExampleReport, worst, directory: Path, title: str) -> str:
    truth, port = report.truth[worst.name], report.port[worst.name]
    where, labels = "", ("w", "h")
    if _is_activation(worst):
        b, c = _worst_sample_and_channel(truth, port)
        truth, port, where = truth[b, c], port[b, c], f", sample {b}, channel {c}"
    elif np.ndim(truth) == 4:
        labels = ("input channel x kH x kW", "output channel")
    else:  # a bias, gamma: values, not a picture
        return _bars(
            truth,
            port,
            directory / "worst_tensor.png",
            f"{title}\n{worst.name}: the worst tensor, {worst.ratio:.3g}x the reference's "
            "own error",
        )
    return _side_by_side(
        truth,
        port,
        directory / "worst_tensor.png",
        f"{title}\n{worst.name}{where}: the worst tensor, {worst.ratio:.3g}x the reference's "
        "own error",
        labels=labels,
    )


def draw_attention(localization, directory: Path, title: str) -> str | None:
    """attention.png: where the first line the port never computes is an attention map
    (B, N, N), the reference's and the port's weights of one query position side by side on
    one colour scale, as an H x W picture when N = H * W: the query whose weights differ
    most, in the first sample. The port's map is the port tensor that relates to the line
    or reads its inputs, read in the reference's layout. None where there is no such map."""
    from parity.core.relayout import relayouts

    step = getattr(localization, "first_wrong", None)
    if step is None or step.truth.ndim != 3 or step.truth.shape[1] != step.truth.shape[2]:
        return None
    example = localization.example
    sizes = (example.batch, example.channels, example.height, example.width)
    related = [localization.relation.port] if localization.relation else []
    port = None
    for value in [*related, *localization.readers]:
        read = next(iter(relayouts(value.value.shape, step.truth.shape, sizes)), None)
        if read is not None:
            port = read(value.value)
            break
    if port is None:
        return None
    truth = step.truth[0]
    query = int(np.argmax(np.max(np.abs(port[0] - truth), axis=1)))
    positions = truth.shape[1]
    shape = (
        (example.height, example.width)
        if positions == example.height * example.width
        else (1, positions)
    )
    return _side_by_side(
        truth[query].reshape(shape),
        port[0][query].reshape(shape),
        directory / "attention.png",
        f"{title}\nat the first line it never computes, {step.where} `{step.code}`:\n"
        f"the weights of query {query} (sample 0, localized on {example.to_text()})",
        shared=True,
    )


def _error_map(error, directory: Path, title: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    per_position = np.nanmax(error, axis=(0, 1))
    image = ax.imshow(
        per_position, cmap="magma", vmin=0, vmax=_top(per_position), interpolation="nearest"
    )
    _plain_colorbar(fig, image, ax, "max |port - truth| / scale")
    ax.set(xlabel="w", ylabel="h")
    fig.suptitle(title, fontsize=10)
    return _save(fig, directory / "error_map.png")


def _channel_errors(error, directory: Path, title: str) -> str:
    import matplotlib.pyplot as plt

    channels = error.shape[1]
    fig, ax = plt.subplots(figsize=(max(5, 0.2 * channels + 2), 3.8), layout="constrained")
    ax.bar(np.arange(channels), np.nanmax(error, axis=(0, 2, 3)), color="#c0392b")
    ax.set(xlabel="channel", ylabel="max |port - truth| / scale", ylim=(0, None))
    fig.suptitle(title, fontsize=10)
    return _save(fig, directory / "channel_errors.png")


def _top(values) -> float:
    top = float(np.nanmax(values)) if np.size(values) else 0.0
    return top if np.isfinite(top) and top > 0 else 1.0


def _as_image(values) -> np.ndarray:
    """A tensor as a 2-D picture: an (H, W) map as it is, a kernel (out, in, kH, kW) as
    out x (in * kH * kW), a vector as one row."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        return values
    return values.reshape(values.shape[0], -1) if values.ndim > 2 else values.reshape(1, -1)


def _side_by_side(
    truth, port, path: Path, title: str, labels=("w", "h"), *, shared: bool = False
) -> str:
    """Reference, port, and port - reference; each in its own colour range, the difference
    centred on zero; or, ``shared``, all three on one scale (a port that is right in shape
    but damped, 0.12 where the reference has 0.2, shows only so)."""
    import matplotlib.pyplot as plt

    truth, port = _as_image(truth), _as_image(port)
    rows, columns = truth.shape
    width = 4.2 if columns >= rows else max(2.5, 4.2 * columns / rows)
    fig, axes = plt.subplots(1, 3, figsize=(3 * width + 1.5, 4.2), layout="constrained")
    difference = np.where(np.isfinite(port), port - truth, np.nan)
    reach = _top(np.abs(difference))
    panels = [
        (truth, "reference (float64)", "viridis", None, None),
        (port, "port", "viridis", None, None),
        (difference, "port - reference", "coolwarm", -reach, reach),
    ]
    if shared:
        every = np.concatenate([a[np.isfinite(a)] for a in (truth, port, difference)])
        low, high = (float(every.min()), float(every.max())) if every.size else (0.0, 1.0)
        panels = [(data, label, "viridis", low, high) for data, label, _, _, _ in panels]
    for ax, (data, label, cmap, low, high) in zip(axes, panels, strict=True):
        finite = data[np.isfinite(data)]
        if low is None and finite.size:
            low, high = float(finite.min()), float(finite.max())
        image = ax.imshow(data, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set(xlabel=labels[0], ylabel=labels[1])
        if rows == 1:
            ax.set_yticks([])
        _plain_colorbar(fig, image, ax)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _bars(truth, port, path: Path, title: str) -> str:
    """A vector (or a scalar): reference and port side by side, and their difference."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    truth, port = np.ravel(truth), np.ravel(port)
    index = np.arange(truth.size)
    size = (max(8, 0.3 * truth.size + 5), 3.8)
    fig, axes = plt.subplots(1, 2, figsize=size, layout="constrained")
    axes[0].bar(index - 0.2, truth, width=0.4, label="reference (float64)", color="#2c7fb8")
    axes[0].bar(index + 0.2, port, width=0.4, label="port", color="#f39c12")
    axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    axes[1].bar(index, port - truth, color="#c0392b")
    axes[1].axhline(0, color="black", linewidth=0.5)
    for ax, label in zip(axes, ("value", "port - reference"), strict=True):
        ax.set(xlabel="index", ylabel=label)
        ax.set_xticks(index if truth.size <= 24 else ax.get_xticks())
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3g"))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# -- one pair's report, from the driver's outcome ------------------------------------------------


def write_report(
    checker,
    outcome,
    diagnosis,
    *,
    directory: Path,
    port: str,
    replay,
    localization=None,
    quantization=None,
) -> Path:
    """``report.json`` and the pictures of one pair's check (``parity.run.driver.Outcome``) in
    ``directory``; ``port``: how the port was named; ``replay``: the counterexample's
    replay command (None without one); ``localization``: where inside the module it first
    goes wrong (``parity.diagnosis.localize.Localization``), if said; ``quantization``: where
    an int8 file loses precision (``parity.diagnosis.quantization.QuantizationTrace``).
    NotWritable where the folder cannot be made."""
    from parity.core.errors import NotWritable

    pair = checker.pair
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NotWritable(f"cannot write --report {directory}: {error.strerror}") from None
    example_report = outcome.report
    if example_report is None and outcome.passed and outcome.worst_example is not None:
        example_report = checker.check(outcome.worst_example, keep=True)
    pictures, drawn = [], None
    if example_report is not None and example_report.truth is not None:
        drawn = picture_report(checker, outcome) or example_report
        verdict = "pass" if outcome.passed else "FAIL"
        title = f"{pair.name} {verdict} on {drawn.example.to_text()}"
        pictures = draw_pictures(drawn, directory, title, residual=pair.residual)
        attention = draw_attention(localization, directory, f"{pair.name} {verdict}")
        pictures += [attention] if attention else []
    counterexample = outcome.counterexample
    report = build_report(
        module=pair.name,
        port=port,
        data_format=pair.data_format,
        passed=outcome.passed,
        examples_run=outcome.examples_run,
        policy=checker.policy,
        tally=outcome.worst,
        example_report=example_report,
        counterexample=counterexample,
        replay=replay,
        diagnosis=diagnosis,
        error=outcome.failure or None,
        weight_map=port_weight_map(checker, counterexample or outcome.worst_example),
        pictures=pictures,
        worst_example=counterexample or outcome.worst_example,
        drawn=drawn,
        localization=None if localization is None else localization.as_dict(),
        quantization=None if quantization is None else quantization.as_dict(),
    )
    path = write_json(report, directory)
    where = localization or quantization
    write_html(report, directory, None if where is None else where.describe())
    return path


def port_weight_map(checker, example) -> dict:
    """Reference parameter -> the port's weight path, as bound on ``example``'s shape ({}
    without an example, or where the port cannot be built on it)."""
    from parity.core.errors import PortError

    if example is None:
        return {}
    try:
        instance = checker.port_for(example)
        return {
            b.torch_key: instance.name_of(b.variable)
            for b in checker.bindings(instance, example.channels)
        }
    except PortError:
        return {}


PICTURE_SIDES = (9, 12)
"""H != W, both above 8, H*W off multiples of 8: room for a scramble of positions to show.
A minimal counterexample (1x2 pixels) shows nothing."""

PICTURE_SCALES = (None, 0.1, 1.0, 3.0)  # None: the scale of the example found


def picture_report(checker, outcome) -> ExampleReport | None:
    """The example the pictures show: at batch 2 and PICTURE_SIDES, with the found
    example's scale and seed first, then a few others. Failing: the first of them that
    fails too; passing: the worst of them. None when none qualifies (the pictures then show
    the example found itself)."""
    from parity.core.errors import PortError

    found = outcome.worst_example if outcome.passed else outcome.counterexample
    if found is None:
        return None
    reports = []
    for i, scale in enumerate(PICTURE_SCALES):
        example = checker.pair.richer_example(found.seed + i, scale or found.scale, *PICTURE_SIDES)
        try:
            report = checker.check(example, keep=True)
        except PortError:
            continue
        if not outcome.passed and not report.passed:
            return report
        reports.append(report)
    if outcome.passed and reports:
        return max(reports, key=lambda r: r.worst().ratio)
    return None
