"""Benchmarks: the Keras port against the PyTorch reference, time and memory.

Times are medians of repeated runs after warm-up (every run kept, for the spread), both
frameworks timed in the same process with the same thread count; peak memory is measured
for each configuration in a process of its own: the peak resident set while the module and
its input are built and run forward and backward once, above what the process held before
(the framework already started).
Achieved GFLOP/s are set against the machine's own matmul throughput, measured here.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from parity.backends.timing import median_ms, times_ms, torch_runs
from parity.core import registry

SHAPES = {
    name: list(d.bench.shapes) for name, d in registry.definitions().items() if d.bench is not None
}
"""DANet's working shapes (B, C, H, W) per registered pair (``BenchSpec.shapes``)."""
KERAS_MODES = ("eager", "function", "xla")


@dataclass
class Row:
    module: str
    shape: tuple
    implementation: str  # torch, or keras-<mode>
    forward_ms: float
    backward_ms: float  # forward and backward together
    gflop: float  # forward
    peak_mb: float | None = None
    variant: str = ""  # the BenchVariant (DANet's backbone), "" where the pair has none
    forward_runs_ms: list[float] = field(default_factory=list)
    backward_runs_ms: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.module}/{self.variant}" if self.variant else self.module


def variants(module: str) -> tuple[registry.BenchVariant, ...]:
    """The versions of ``module`` the benchmark times: its ``BenchSpec.variants``, or the
    spec itself as one unnamed variant (its factories default to the pair's)."""
    spec = registry.definition(module).bench
    if spec.variants:
        return spec.variants
    pair = lambda: registry.definition(module).pair  # noqa: E731 -- built only when used
    return (
        registry.BenchVariant(
            "",
            spec.flops,
            spec.make_reference or (lambda channels: pair().make_reference(channels)),
            spec.make_port or (lambda channels: pair().make_port(channels)),
        ),
    )


def variant(module: str, name: str = "") -> registry.BenchVariant:
    found = {v.name: v for v in variants(module)}
    if name not in found:
        raise ValueError(f"Expected one of {sorted(found)}. Received: variant={name!r}")
    return found[name]


def flops(module: str, shape: tuple, variant_name: str = "") -> float:
    """Multiply-adds times two of the forward pass (softmax and elementwise work left out)."""
    return variant(module, variant_name).flops(tuple(shape))


# -- the two frameworks ------------------------------------------------------------------------


def keras_runs(
    module: str, shape: tuple, mode: str, chunk_size: int | None = None, variant_name: str = ""
):
    from parity.backends.protocol import port_framework

    framework = port_framework()
    b, c, h, w = shape
    layer = (
        _lean(module).make_port(chunk_size)
        if chunk_size
        else variant(module, variant_name).make_port(c)
    )
    x = np.random.default_rng(0).standard_normal((b, h, w, c)).astype("float32")
    outputs = framework.forward(layer, x, "eager")
    cotangents = [
        np.random.default_rng(1).standard_normal(y.shape).astype("float32") for y in outputs
    ]
    variables = list(layer.trainable_variables)

    def forward():
        framework.forward(layer, x, mode)

    def forward_backward():
        framework.vjp(layer, x, cotangents, variables, mode)

    return forward, forward_backward


# -- memory, each configuration in a process of its own ------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_peak_mb(work) -> float:
    """Peak resident memory while ``work()`` runs, above what the process held before it.

    Measured from before the work, not after a warm-up run: an allocator that keeps what it
    freed (TensorFlow's does; PyTorch returns large blocks) would hide the peak otherwise.
    """
    before = _rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak (VmHWM) to the current RSS
    work()
    return (_rss_kb("VmHWM") - before) / 1024.0


def peak_in_subprocess(
    module, shape, implementation, chunk_size=None, variant_name=""
) -> float | None:
    command = [
        sys.executable,
        "-m",
        "parity.frontends.bench",
        "--memory-child",
        json.dumps(
            {
                "module": module,
                "shape": shape,
                "implementation": implementation,
                "chunk_size": chunk_size,
                "variant": variant_name,
            }
        ),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        return None
    return float(result.stdout.strip().splitlines()[-1])


def _memory_child(spec: dict) -> None:
    """Peak memory of building the module and its input and running forward and backward
    once, after the framework has started up (thread pools, kernels) on a small input. The
    small run's module stays alive: memory it freed cannot be reused unseen by the one
    measured."""
    module, implementation = spec["module"], spec["implementation"]
    variant_name = spec.get("variant", "")

    def forward_backward(shape):
        if implementation == "torch":
            return torch_runs(variant(module, variant_name).make_reference(shape[1]), shape)[1]
        mode = implementation.removeprefix("keras-")
        return keras_runs(module, shape, mode, spec.get("chunk_size"), variant_name)[1]

    warm_up = forward_backward(_small_shape(module))
    warm_up()
    print(measure_peak_mb(lambda: forward_backward(tuple(spec["shape"]))()))
    del warm_up


def _small_shape(module: str) -> tuple[int, int, int, int]:
    """A 4x4 input with 64 channels, or as near as the module accepts."""
    size = registry.definition(module).size
    channels = max(size.min_channels, min(64, size.max_channels or 64))
    return (1, channels, 4, 4)


# -- the machine ------------------------------------------------------------------------------


# -- the run ------------------------------------------------------------------------------------


def run(
    shapes: dict,
    *,
    repeats=5,
    warmup=2,
    memory=True,
    modes=KERAS_MODES,
    variant_names=None,
    progress=print,
) -> list[Row]:
    """Every implementation at ``shapes`` ({module: [(B, C, H, W), ...]}, e.g. SHAPES), a
    row per shape, variant (of those named in ``variant_names``, default all) and
    implementation (PyTorch, then the Keras port in each of ``modes``)."""
    rows = []
    for module, module_shapes in shapes.items():
        chosen = [
            v.name
            for v in variants(module)
            if not (v.name and variant_names) or v.name in variant_names
        ]
        for shape in module_shapes:
            for name in chosen:
                rows += _run_variant(
                    module, tuple(shape), name, repeats, warmup, memory, modes, progress
                )
    return rows


def _run_variant(module, shape, variant_name, repeats, warmup, memory, modes, progress):
    work = flops(module, shape, variant_name) / 1e9
    implementations = [
        ("torch", lambda: torch_runs(variant(module, variant_name).make_reference(shape[1]), shape))
    ]
    implementations += [
        (f"keras-{mode}", lambda mode=mode: keras_runs(module, shape, mode, None, variant_name))
        for mode in modes
    ]
    rows = []
    for name, make in implementations:
        progress(f"{module} {variant_name} {shape} {name}...".replace("  ", " "))
        forward, forward_backward = make()
        forward_runs = times_ms(forward, repeats, warmup)
        backward_runs = times_ms(forward_backward, repeats, warmup)
        del forward, forward_backward  # the module, freed before the next is built
        row = Row(
            module,
            shape,
            name,
            statistics.median(forward_runs),
            statistics.median(backward_runs),
            work,
            variant=variant_name,
            forward_runs_ms=forward_runs,
            backward_runs_ms=backward_runs,
        )
        if memory:
            row.peak_mb = peak_in_subprocess(module, list(shape), name, None, variant_name)
        rows.append(row)
    return rows


TRUTH_LIMIT_GIB = 4.0
"""The largest float64 attention the lean check builds: the truth is the pair's reference
itself, which holds it whole (and its softmax beside it)."""
DENSE_LIMIT_GIB = 4.0
"""The largest float32 attention the dense port is timed with."""


def leaned() -> list[str]:
    """The pairs with a memory-lean port (``BenchSpec.lean``)."""
    return [n for n, d in registry.definitions().items() if d.bench and d.bench.lean]


def _lean(module: str):
    spec = registry.definition(module).bench
    if spec is None or spec.lean is None:
        raise ValueError(f"Expected one of {leaned()}. Received: module={module!r}")
    return spec.lean


def attention_gib(module: str, side: int, channels: int, bytes_per_value: int) -> float:
    """The module's attention maps at (1, channels, side, side), in GiB."""
    values = registry.definition(module).size.attention_values(1, channels, side, side)
    return bytes_per_value * values / 2**30


def lean_rows(module: str, repeats=1, progress=print) -> list[dict]:
    """The pair's memory-lean port against its dense one: forward+backward time and peak
    memory, and the lean port's output against the reference where the reference's
    float64 attention fits."""
    lean = _lean(module)
    rows = []
    for side in lean.sides:
        shape = (1, lean.channels, side, side)
        for name, chunk in (("dense", None), (f"chunk {lean.chunk_size}", lean.chunk_size)):
            row = {"module": module, "shape": shape, "implementation": name}
            dense_gib = attention_gib(module, side, lean.channels, 4)
            if chunk is None and dense_gib > DENSE_LIMIT_GIB:
                progress(
                    f"{shape} {name}: skipped, the dense attention alone is {dense_gib:.0f} GiB"
                )
                rows.append({**row, "backward_ms": None, "peak_mb": None})
                continue
            progress(f"{shape} {name}...")
            _, forward_backward = keras_runs(module, shape, "eager", chunk)
            row["backward_ms"] = median_ms(forward_backward, repeats, 1)
            row["peak_mb"] = peak_in_subprocess(module, list(shape), "keras-eager", chunk)
            if chunk is not None:
                truth_gib = attention_gib(module, side, lean.channels, 8)
                if truth_gib > TRUTH_LIMIT_GIB:
                    progress(
                        f"{shape} {name}: parity not checked, the reference's float64 "
                        f"attention alone is {truth_gib:.0f} GiB"
                    )
                else:
                    progress(f"{shape} {name}: parity against the reference...")
                    row["parity"] = lean_parity(module, side, lean.channels, chunk)
            rows.append(row)
    return rows


def lean_parity(module, side, channels=512, chunk_size=512, seed=0, layer=None) -> dict:
    """The pair's lean port against its reference, by the suite's own check.

    ``parity.run.engine.Checker`` loads the same weights (``LeanBench.randomize``) into the
    reference and the port, runs the reference in float64 (truth) and float32 (its own
    error), and judges the port's output by the tolerance policy (``parity.core.policy``).
    The reference holds its whole float64 attention, so sides whose attention passes
    TRUTH_LIMIT_GIB are refused (ValueError). ``layer``: an unbuilt channels-last port in
    place of ``LeanBench.make_port(chunk_size)``.
    """
    from dataclasses import replace

    from parity.core.strategies import Example
    from parity.run.engine import Checker

    lean = _lean(module)
    truth_gib = attention_gib(module, side, channels, 8)
    if truth_gib > TRUTH_LIMIT_GIB:
        raise ValueError(
            f"side={side}: the reference's float64 attention would take {truth_gib:.0f} GiB "
            f"(limit {TRUTH_LIMIT_GIB:g} GiB)"
        )
    pair = replace(
        registry.pair(module),
        name=f"{module} (chunk {chunk_size})",
        make_port=lambda channels: lean.make_port(chunk_size) if layer is None else layer,
        randomize=lean.randomize,
    )
    example = Example(1, channels, side, side, 1.0, seed)
    (comparison,) = Checker(pair).check(example, gradients=False).comparisons
    return {
        "shape": example.shape,
        "port_error": comparison.relative_error,
        "reference_error": comparison.reference_error,
        "ratio": comparison.ratio,
        "allowed_ratio": comparison.allowed_ratio,
        "passed": comparison.passed,
    }


def spread_percent(runs: list[float]) -> float:
    """The runs' range (slowest - fastest) over their median, in percent."""
    return 100.0 * (max(runs) - min(runs)) / statistics.median(runs) if runs else 0.0


def table(rows: list[Row], throughput: dict) -> str:
    """A line per row; ``vs torch``: its median time over PyTorch's at the same shape and
    variant, forward/forward+backward; ``spread``: the range of the runs, in % of the median."""
    width = max([6, *(len(r.label) for r in rows)])
    lines = [
        f"{'module':<{width}} {'shape':<20} {'implementation':<15} {'forward ms':>11} "
        f"{'fwd+bwd ms':>11} {'vs torch':>9} {'fwd GFLOP/s':>12} {'% of matmul':>12} "
        f"{'peak MB':>9} {'spread %':>9}"
    ]
    torch_times = {(r.label, r.shape): r for r in rows if r.implementation == "torch"}
    for r in rows:
        base = torch_times[(r.label, r.shape)]
        framework = "torch" if r.implementation == "torch" else "tensorflow"
        achieved = r.gflop / (r.forward_ms / 1000.0)
        ratio = f"{r.forward_ms / base.forward_ms:.2f}/{r.backward_ms / base.backward_ms:.2f}"
        peak = "-" if r.peak_mb is None else f"{r.peak_mb:.0f}"
        spread = f"{spread_percent(r.forward_runs_ms):.0f}/{spread_percent(r.backward_runs_ms):.0f}"
        lines.append(
            f"{r.label:<{width}} {r.shape!s:<20} {r.implementation:<15} {r.forward_ms:>11.1f} "
            f"{r.backward_ms:>11.1f} {ratio:>9} {achieved:>12.1f} "
            f"{100 * achieved / throughput[framework]:>11.0f}% {peak:>9} {spread:>9}"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    """Time (top) and peak memory (bottom) against H*W, a column per module, a colour per
    implementation; batch-1 shapes joined by lines, larger batches as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modules = list(dict.fromkeys(r.label for r in rows))
    implementations = list(dict.fromkeys(r.implementation for r in rows))
    colours = dict(zip(implementations, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(2, len(modules), figsize=(4.2 * len(modules), 7), squeeze=False)
    for column, module in enumerate(modules):
        for implementation in implementations:
            chosen = [r for r in rows if r.label == module and r.implementation == implementation]
            for row_axes, value in ((axes[0, column], "backward_ms"), (axes[1, column], "peak_mb")):
                single = sorted((r for r in chosen if r.shape[0] == 1), key=lambda r: r.shape[2:])
                batched = [r for r in chosen if r.shape[0] > 1]
                style = dict(color=colours[implementation])
                row_axes.plot(
                    [r.shape[2] * r.shape[3] for r in single],
                    [getattr(r, value) or np.nan for r in single],
                    marker="o",
                    label=implementation,
                    **style,
                )
                row_axes.plot(
                    [r.shape[2] * r.shape[3] for r in batched],
                    [getattr(r, value) or np.nan for r in batched],
                    "x",
                    markersize=9,
                    **style,
                )
        axes[0, column].set(title=module, ylabel="forward+backward ms", yscale="log")
        axes[1, column].set(xlabel="H * W (crosses: batch > 1)", ylabel="peak MB", yscale="log")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rows_as_json(rows) -> list[dict]:
    return [asdict(r) if isinstance(r, Row) else r for r in rows]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
    from parity.backends.quiet import import_keras_quietly

    import_keras_quietly()
    _memory_child(json.loads(sys.argv[2]))
