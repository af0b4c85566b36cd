"""The ``parity`` command's arguments: the parser, its value types, its exit statuses, and
what can be told from the arguments alone, before any framework is imported (a usage error
is answered in a second, without the 10-20 s TensorFlow and PyTorch take to import).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parity.backends.which_keras import keras_major
from parity.core import registry
from parity.core.artifacts import ARTIFACTS
from parity.core.errors import UsageError
from parity.core.sizes import check_fits
from parity.frontends.bench import KERAS_MODES, leaned
from parity.frontends.cli.selection import check_names
from parity.frontends.cli.writable import check_directory, check_file
from parity.run.driver import DEFAULT_EXAMPLES

EXIT_PARITY, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


# -- argument parsing ------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected B,C,H,W: four positive whole numbers, got {text!r}"
        )
    return tuple(int(part) for part in parts)


def _example(text: str):
    from parity.core.strategies import Example

    try:
        return Example.from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("danet-parity")
    except PackageNotFoundError:
        return "(not installed)"


def _listing() -> str:
    return ", ".join(f"{n} ({d.summary})" for n, d in registry.definitions().items())


def benched() -> list[str]:
    return [n for n, d in registry.definitions().items() if d.bench is not None]


def _bench_variants() -> dict[str, list[str]]:
    """The named variants of each benchmarked pair that has some (danet: its backbones)."""
    return {
        n: [v.name for v in d.bench.variants]
        for n, d in registry.definitions().items()
        if d.bench is not None and d.bench.variants
    }


def _size_variants() -> dict[str, list[str]]:
    """The sizes ``parity check --variant`` checks, per pair that has some (danet: the
    original network on each backbone)."""
    return {n: [v.name for v in d.sizes] for n, d in registry.definitions().items() if d.sizes}


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in text.split(","))
    unknown = [m for m in modes if m not in KERAS_MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(
            f"expected some of {','.join(KERAS_MODES)}, comma-separated, got {text!r}"
        )
    return modes


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _convertible() -> dict:
    return {n: d for n, d in registry.definitions().items() if d.checkpoint is not None}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block): a CI log shows the line that matters."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parity",
        description="Prove that a Keras port computes what its PyTorch reference computes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check a Keras port against the PyTorch reference on random examples",
        description="Check a Keras port (the bundled one, or yours with --port) against the "
        "PyTorch reference: outputs and gradients (input and every parameter) on random "
        "shapes, scales and weights. Exit 0: parity holds; 1: the port fails; 2: the check "
        "could not run.",
    )
    check.add_argument(
        "modules",
        nargs="*",
        metavar="MODULE",
        help=f"any of {_listing()} (default: all of them)",
    )
    check.add_argument(
        "--port",
        metavar="MODULE:FACTORY",
        help="your port: FACTORY(channels) returns a Keras layer or a function of a Keras tensor",
    )
    check.add_argument(
        "--weight-map",
        metavar="FILE.json",
        help="a JSON object: reference parameter -> your port's weight path (null: it has none)",
    )
    check.add_argument(
        "--absent",
        action="append",
        default=[],
        metavar="PARAM",
        help="a reference parameter your port does not have (a glob, repeatable: '*.bias' "
        "for use_bias=False): held at zero in the reference",
    )
    check.add_argument(
        "--spec",
        metavar="MODULE:PAIR",
        help="check a module pair of your own (a parity.core.spec.ModulePair)",
    )
    check.add_argument(
        "--examples",
        type=_positive,
        default=None,
        help=f"examples per module ({DEFAULT_EXAMPLES}, or fewer where the pair says one "
        "example costs seconds)",
    )
    check.add_argument("--seed", type=int, default=0, help="Hypothesis seed (0)")
    check.add_argument(
        "--variant",
        metavar="NAME",
        help="check one module at another size instead (a few examples, each slower): "
        + "; ".join(f"{m}: {', '.join(v)}" for m, v in _size_variants().items()),
    )
    check.add_argument(
        "--data-format",
        choices=["channels_last", "channels_first"],
        help="the layout your port reads and writes (default channels_last)",
    )
    check.add_argument("--report", metavar="DIR", help="write report.json and pictures here")
    check.add_argument(
        "--example",
        type=_example,
        metavar="B,C,H,W,SCALE,SEED",
        help="replay one example exactly, as printed by a failure",
    )
    check.add_argument(
        "--train",
        choices=["sgd", "adam"],
        help="check one training step instead: training mode (BatchNorm on batch "
        "statistics), a cross-entropy on the outputs, then this optimizer's step",
    )
    check.add_argument(
        "--keras",
        choices=["3", "2"],
        help="the Keras the port is written for (default: detected from its source: tf.keras, "
        "keras.backend functions Keras 3 removed, Keras 2 module paths mean 2; 2 needs tf-keras)",
    )
    check.add_argument("--legacy-keras", action="store_true", help="the same as --keras 2")
    check.add_argument(
        "--factor",
        type=_factor,
        metavar="X",
        help="the tolerance policy's factor: a tensor passes when its error against float64 "
        "truth is at most X times the reference's own (default 16; recorded in the report and "
        "the replay command)",
    )
    check.add_argument(
        "--export",
        choices=list(ARTIFACTS),
        help="check the artifact you ship instead: the port exported in this format (Keras' "
        "Model.export) and run by its runtime (TensorFlow, LiteRT, onnxruntime), outputs "
        "only; needs the export extra",
    )
    check.add_argument(
        "--convert",
        choices=["nobuco"],
        help="check a converter's output as the port: the reference converted by nobuco at "
        "each input shape (one module; runs under tf.keras 2; see docs/exports.md)",
    )
    check.add_argument(
        "--no-tf32",
        action="store_true",
        help="on a GPU, float32 computed as float32: TF32 off in PyTorch and TensorFlow, "
        "JAX's matmul precision 'highest' (with the libraries' defaults a faithful port "
        "fails there)",
    )
    bench = commands.add_parser(
        "bench",
        help="time and measure the Keras port against the PyTorch reference",
        description="Forward and forward+backward time (median after warm-up) and peak "
        "memory of the PyTorch reference and the Keras port (eager, tf.function, XLA) at "
        "each module's working shapes, with achieved GFLOP/s against the machine's matmul "
        "throughput.",
    )
    bench.add_argument(
        "modules",
        nargs="*",
        metavar="MODULE",
        help=f"any of {', '.join(benched())} (default: all of them)",
    )
    bench.add_argument("--repeats", type=_positive, default=5, help="timed runs per case (5)")
    bench.add_argument(
        "--warmup", type=_count, default=2, help="untimed runs before them, per case (2)"
    )
    bench.add_argument(
        "--modes",
        type=_modes,
        default=KERAS_MODES,
        metavar="MODE,...",
        help=f"the Keras modes to time (default: {','.join(KERAS_MODES)})",
    )
    variants = _bench_variants()
    bench.add_argument(
        "--variant",
        action="append",
        metavar="NAME",
        help="time only this variant of a module that has several; repeatable ("
        + "; ".join(f"{n}: {', '.join(v)}" for n, v in variants.items())
        + "; default: all)",
    )
    bench.add_argument("--threads", type=_positive, default=2, help="threads per framework (2)")
    bench.add_argument(
        "--shape",
        type=_shape,
        action="append",
        metavar="B,C,H,W",
        help="time this input shape (NCHW) instead of the modules' working shapes; repeatable",
    )
    bench.add_argument("--no-memory", action="store_true", help="skip peak memory (faster)")
    bench.add_argument("--plot", metavar="FILE.png", help="time and memory against H*W")
    bench.add_argument("--json", metavar="FILE.json", help="the measurements, machine-readable")
    bench.add_argument(
        "--lean",
        action="store_true",
        help="instead: the memory-lean port of each module that has one ("
        + ", ".join(leaned())
        + ") against the dense one at large sizes, checked against the reference where it fits",
    )
    convert = commands.add_parser(
        "convert",
        help="convert a checkpoint: PyTorch -> Keras .weights.h5, or Keras -> .safetensors",
        description="Convert a PyTorch checkpoint (.pth/.pt/.bin, read with weights_only=True, "
        "or .safetensors) into Keras weights (.weights.h5), or Keras weights back into "
        ".safetensors. Strict: missing, unexpected or mis-shaped keys are refused (exit 2, "
        "nothing written) unless named with --ignore.",
    )
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convertible = _convertible()
    default = next((n for n, d in convertible.items() if d.checkpoint.default), None)
    convert.add_argument(
        "--module",
        choices=list(convertible),
        default=default,
        help=f"the module the checkpoint holds (default: {default})",
    )
    convert.add_argument(
        "--prefix", default="", help="keys' prefix in the checkpoint, e.g. head. for a full DANet"
    )
    convert.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="leave this key (a glob, without the prefix) out; repeatable",
    )
    return parser


# -- arguments checked before any framework is imported --------------------------------------


def _check_shape_fits(module: str, shape: tuple[int, int, int, int], option: str) -> None:
    """A bundled module's smallest channel count, and whether its attention fits in memory."""
    size = registry.definition(module).size
    text = ",".join(map(str, shape))
    if shape[1] < size.min_channels:
        raise UsageError(
            f"{option} {text}: {module} needs at least {size.min_channels} channels, got {shape[1]}"
        )
    if size.max_channels is not None and shape[1] > size.max_channels:
        raise UsageError(
            f"{option} {text}: {module} takes at most {size.max_channels} channels, got {shape[1]}"
        )
    check_fits(module, size, shape, option=option)


def _check_module_names(names: list[str], known: list[str] | None = None) -> None:
    known = registry.names() if known is None else known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"unknown module {unknown[0]!r}; expected one of {sorted(known)}")


def validate_check(args) -> None:
    """What ``parity check`` can tell from its arguments alone (a --spec pair's own limits
    are checked once it is imported: check_pairs)."""
    if args.spec and args.modules:
        raise UsageError("give either --spec or module names, not both")
    if args.example is not None and args.examples is not None:
        raise UsageError(
            "give either --example (one example, checked as it is) or --examples N (a "
            "search of N examples), not both"
        )
    if args.convert:
        _converted_port(args)
    if args.export and args.train:
        raise UsageError("--export checks an artifact's outputs; --train needs the port itself")
    modules = [] if args.spec else (args.modules or registry.names())
    check_names(tuple(args.modules), args.variant)
    if args.example is not None:
        for module in modules:
            _check_shape_fits(module, args.example.shape, "--example")
    if args.report is not None:
        check_directory(args.report, "--report")
        for module in modules:
            check_directory(Path(args.report) / module, "--report")


def _converted_port(args) -> None:
    """--convert nobuco is the port ``parity.backends.nobuco:MODULE`` under tf.keras 2
    (nobuco writes Keras 2 models): what the replay command then names."""
    if args.port or args.spec:
        raise UsageError(f"--convert {args.convert} is the port: give it without --port or --spec")
    if len(args.modules) != 1:
        raise UsageError(f"--convert {args.convert} converts one module: name it (e.g. pam)")
    if args.keras == "3":
        raise UsageError(f"--convert {args.convert} writes Keras 2 models: drop --keras 3")
    args.port = f"parity.backends.{args.convert}:{args.modules[0]}"
    args.keras = "2"


def check_pairs(args, pairs) -> None:
    """The same for the pairs themselves, before any example runs."""
    for pair in pairs:
        if args.example is not None and args.example.channels < pair.min_channels:
            raise UsageError(
                f"--example {args.example.to_text()}: {pair.name} needs at least "
                f"{pair.min_channels} channels, got {args.example.channels}"
            )
        if args.report is not None:
            check_directory(Path(args.report) / pair.name, "--report")


def validate_bench(args) -> None:
    _check_module_names(args.modules, leaned() if args.lean else benched())
    variants = _bench_variants()
    known = sorted({v for m in args.modules or benched() for v in variants.get(m, ())})
    for name in args.variant or []:
        if not known:
            raise UsageError(f"--variant {name}: none of the modules timed has variants")
        if name not in known:
            raise UsageError(f"unknown --variant {name!r}; expected one of {known}")
    for module in args.modules or benched():
        for shape in args.shape or []:
            _check_shape_fits(module, shape, "--shape")
    if args.json:
        check_file(args.json, "--json")
    if args.plot:
        check_file(args.plot, "--plot")


def validate_convert(args) -> None:
    check_file(args.target, "OUT", may_create_parents=True)


VALIDATORS = {"check": validate_check, "bench": validate_bench, "convert": validate_convert}


def port_keras_major(args) -> str:
    """'2' for a port written for Keras 2 (asked for, or detected from its source)."""
    target = args.port or args.spec
    return keras_major(keras=args.keras, legacy_keras=args.legacy_keras, target=target)
