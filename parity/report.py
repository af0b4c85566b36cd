"""The report of a check: JSON (machine-readable, stable fields) and pictures of the worst
example, so that a transpose bug shows at a glance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity.engine import ExampleReport

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
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "module": {"type": "string", "description": "pam, cam, or a user pair's name"},
        "port": {"type": "string", "description": "MODULE:FACTORY, or 'bundled'"},
        "data_format": {"enum": ["channels_last", "channels_first"]},
        "verdict": {"enum": ["pass", "fail"]},
        "examples_run": {"type": "integer"},
        "policy": {
            "type": "object",
            "required": ["factor", "floor_ulps"],
            "properties": {"factor": {"type": "number"}, "floor_ulps": {"type": "number"}},
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
    },
}


def _finite(value):
    return (
        value
        if isinstance(value, (int, str, bool)) or value is None or np.isfinite(value)
        else None
    )


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
        "policy": {"factor": policy.factor, "floor_ulps": policy.floor_ulps},
        "tensors": tensors,
        "counterexample": None if counterexample is None else counterexample._asdict(),
        "replay": replay,
        "comparisons": comparisons,
        "diagnosis": None if diagnosis is None else diagnosis.as_dict(),
        "error": error,
        "weight_map": weight_map,
        "pictures": pictures,
    }
    return json.loads(json.dumps(report, default=_json_default), parse_constant=lambda _: None)


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


def _activation_to_show(report: ExampleReport) -> str:
    """A failing output if there is one (what a user looks at first), else the
    activation-shaped tensor (B, C, H, W) with the worst ratio."""
    candidates = [
        c
        for c in report.comparisons
        if len(c.shape) == 4 and (c.name.startswith("output") or c.name == "grad[input]")
    ]
    outputs = [c for c in candidates if c.name.startswith("output") and not c.passed]
    return max(outputs or candidates, key=lambda c: c.ratio).name


def draw_pictures(
    report: ExampleReport, directory: Path, title: str, *, residual: bool = False
) -> list[str]:
    """error_map.png, channel_errors.png, side_by_side.png for the worst activation.

    For a residual module (output = x + f(x)) the side-by-side view shows f(x), the
    module's own term: x would otherwise dominate both pictures and hide a scramble.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = _activation_to_show(report)
    truth, port = report.truth[name], report.port[name]
    scale = max(float(np.max(np.abs(truth))), 1e-300)
    error = np.abs(port - truth) / scale  # (B, C, H, W)
    error = np.where(np.isfinite(error), error, np.nan)
    b, c = np.unravel_index(np.nanargmax(error.max(axis=(2, 3))), error.shape[:2])
    files = []

    fig, ax = plt.subplots(figsize=(5, 4))
    image = ax.imshow(np.nanmax(error, axis=(0, 1)), cmap="magma", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="max |port - truth| / scale")
    ax.set(title=f"{title}\n{name}: error per position", xlabel="w", ylabel="h")
    files.append(_save(fig, directory / "error_map.png"))

    fig, ax = plt.subplots(figsize=(max(4, 0.25 * error.shape[1] + 2), 3.5))
    ax.bar(np.arange(error.shape[1]), np.nanmax(error, axis=(0, 2, 3)), color="#c0392b")
    ax.set(
        title=f"{title}\n{name}: error per channel",
        xlabel="channel",
        ylabel="max |port - truth| / scale",
    )
    files.append(_save(fig, directory / "channel_errors.png"))

    shown_truth, shown_port, what = truth[b, c], port[b, c], name
    if residual and name.startswith("output") and report.x is not None:
        shown_truth, shown_port = truth[b, c] - report.x[b, c], port[b, c] - report.x[b, c]
        what = f"{name} - x (the module's own term)"
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    low, high = float(np.min(shown_truth)), float(np.max(shown_truth))
    for ax, data, label in [
        (axes[0], shown_truth, "reference (float64)"),
        (axes[1], shown_port, "port"),
    ]:
        shown = ax.imshow(data, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
        ax.set(title=label, xlabel="w", ylabel="h")
        fig.colorbar(shown, ax=ax)
    shown = axes[2].imshow(shown_port - shown_truth, cmap="coolwarm", interpolation="nearest")
    axes[2].set(title="port - reference", xlabel="w", ylabel="h")
    fig.colorbar(shown, ax=axes[2])
    fig.suptitle(f"{title}: {what}, sample {b}, channel {c} (the worst)")
    files.append(_save(fig, directory / "side_by_side.png"))
    return files


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
