"""The ``parity`` command: check a Keras port against the PyTorch reference.

Exit status: 0 parity holds; 1 the port fails (a counterexample, a crash, or weights that
cannot be mapped); 2 the check could not run (bad arguments, a port that cannot be
imported, a factory that raises, an output that cannot be written: one line, nothing
written); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from parity import registry
from parity.bench import KERAS_MODES
from parity.frameworks import LEGACY_ENV, backend_prefix, legacy_keras_enabled, looks_legacy
from parity.quiet import import_keras_quietly
from parity.sizes import TooLarge, check_fits
from parity.writable import NotWritable, check_directory, check_file

# No module-level import of TensorFlow, PyTorch or Keras: a usage error is answered without
# them (they take 10-20 s to import).

EXIT_PARITY, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """The check cannot run; the message is one line for the user."""


# -- argument parsing ------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected B,C,H,W: four positive whole numbers, got {text!r}"
        )
    return tuple(int(part) for part in parts)


def _example(text: str):
    from parity.strategies import Example

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


def _benched() -> list[str]:
    return [n for n, d in registry.definitions().items() if d.bench is not None]


def _bench_variants() -> dict[str, list[str]]:
    """The named variants of each benchmarked pair that has some (danet: its backbones)."""
    return {
        n: [v.name for v in d.bench.variants]
        for n, d in registry.definitions().items()
        if d.bench is not None and d.bench.variants
    }


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


DEFAULT_EXAMPLES = 100


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
        help="check a module pair of your own (a parity.spec.ModulePair)",
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
        help=f"any of {', '.join(_benched())} (default: all of them)",
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
        help="instead: the memory-lean PAM (chunk_size) against the dense one at 64, 128, 256",
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
    try:
        check_fits(module, size, shape)
    except TooLarge as error:
        raise UsageError(f"{option}: {error}") from None


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
    modules = [] if args.spec else (args.modules or registry.names())
    _check_module_names(modules)
    if args.example is not None:
        for module in modules:
            _check_shape_fits(module, args.example.shape, "--example")
    if args.report is not None:
        check_directory(args.report, "--report")
        for module in modules:
            check_directory(Path(args.report) / module, "--report")


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
    _check_module_names(args.modules, _benched())
    variants = _bench_variants()
    known = sorted({v for m in args.modules or _benched() for v in variants.get(m, ())})
    for name in args.variant or []:
        if not known:
            raise UsageError(f"--variant {name}: none of the modules timed has variants")
        if name not in known:
            raise UsageError(f"unknown --variant {name!r}; expected one of {known}")
    for module in args.modules or _benched():
        for shape in args.shape or []:
            _check_shape_fits(module, shape, "--shape")
    if args.json:
        check_file(args.json, "--json")
    if args.plot:
        check_file(args.plot, "--plot")


def validate_convert(args) -> None:
    check_file(args.target, "OUT", may_create_parents=True)


VALIDATORS = {"check": validate_check, "bench": validate_bench, "convert": validate_convert}


# -- what to check -----------------------------------------------------------------------------


def _pairs(args) -> list:
    from parity.ports import PortLoadError, import_target, load_factory
    from parity.spec import ModulePair, with_port
    from parity.weight_map import WeightMapError, read_weight_map

    if args.spec:
        if args.modules:
            raise UsageError("give either --spec or module names, not both")
        try:
            pair = import_target(args.spec, "--spec", "PAIR")
        except PortLoadError as error:
            raise UsageError(str(error)) from None
        if not isinstance(pair, ModulePair):
            raise UsageError(f"--spec {args.spec} is a {type(pair).__name__}, not a ModulePair")
        pairs = [pair]
    else:
        _check_module_names(args.modules)
        pairs = [registry.pair(name) for name in (args.modules or registry.names())]
    if args.port is None:
        if args.weight_map or args.data_format or args.absent:
            raise UsageError(
                "--weight-map, --absent and --data-format describe a port: give --port too"
            )
        return pairs
    if len(pairs) != 1:
        raise UsageError("--port checks one module: name it (parity check MODULE --port ...)")
    try:
        factory = load_factory(args.port)
        weight_map = read_weight_map(args.weight_map) if args.weight_map else None
        return [
            with_port(
                pairs[0],
                factory,
                weight_map=weight_map,
                data_format=args.data_format,
                absent=tuple(args.absent),
            )
        ]
    except (PortLoadError, WeightMapError) as error:
        raise UsageError(str(error)) from None


def replay_command(args, module: str, example) -> str:
    parts = ["parity check"]
    parts.append(f"--spec {args.spec}" if args.spec else module)
    if args.port:
        parts.append(f"--port {args.port}")
    if args.weight_map:
        parts.append(f"--weight-map {args.weight_map}")
    parts += [f"--absent {shlex.quote(pattern)}" for pattern in args.absent]
    if args.legacy_keras:
        parts.append("--legacy-keras")
    if args.keras:
        parts.append(f"--keras {args.keras}")
    if args.data_format:
        parts.append(f"--data-format {args.data_format}")
    if args.train:
        parts.append(f"--train {args.train}")
    parts.append(f"--example {example.to_text()}")
    return backend_prefix() + " ".join(parts)


# -- running one module ----------------------------------------------------------------------


@dataclass
class Outcome:
    module: str
    examples_run: int = 0
    worst: dict = field(default_factory=dict)  # tensor name -> TensorComparison
    worst_example: object = None
    worst_ratio: float = -1.0
    counterexample: object = None
    failure: str = ""
    report: object = None  # ExampleReport of the counterexample (or the worst example)

    @property
    def passed(self) -> bool:
        return self.counterexample is None and not self.failure

    def add(self, report):
        """A passing example."""
        self.examples_run += 1
        self.tally(report.comparisons)
        if report.worst().ratio > self.worst_ratio:
            self.worst_ratio, self.worst_example = report.worst().ratio, report.example

    def tally(self, comparisons):
        for c in comparisons:
            if c.name not in self.worst or c.ratio > self.worst[c.name].ratio:
                self.worst[c.name] = c


class Progress:
    """Examples done of N, on one updated line when stderr is a terminal."""

    def __init__(self, module: str, total: int, stream):
        self.module, self.total, self.stream = module, total, stream
        self.done = 0
        self.live = stream.isatty()
        self.last_step = 0

    def tick(self):
        self.done += 1
        if self.live:
            self.stream.write(
                f"\r{self.module}: {min(self.done, self.total)}/{self.total} examples"
            )
            self.stream.flush()
        elif self.done <= self.total:
            step = 5 * self.done // self.total  # a line every 20%
            if step > self.last_step:
                self.last_step = step
                print(f"{self.module}: {self.done}/{self.total} examples", file=self.stream)

    def shrinking(self):
        if self.live:
            self.stream.write(f"\r{self.module}: failed; shrinking to a minimal example...   ")
            self.stream.flush()
        else:
            print(f"{self.module}: failed; shrinking to a minimal example", file=self.stream)

    def close(self):
        if self.live:
            self.stream.write("\n")


def _check_examples(pair, args, outcome: Outcome, progress: Progress):
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from parity.assertions import ParityFailure, checker_for
    from parity.ports import PortError

    checker = checker_for(pair)
    failed = []
    strategy = pair.examples()
    if args.train:
        from parity.assertions import training_checker_for
        from parity.training import OPTIMIZERS, trainable

        optimizer = OPTIMIZERS[args.train]
        strategy = strategy.filter(trainable)

        def run(example, forward_first):
            return training_checker_for(pair).check(example, optimizer)
    else:

        def run(example, forward_first):
            return checker.check(example, forward_first=forward_first)

    def check(example):
        INTERRUPTS.check()
        try:
            report = run(example, bool(failed))
        except PortError as error:
            error.example = example
            raise
        if not report.passed:
            raise ParityFailure(report)
        return report

    if args.example is not None:
        try:
            outcome.add(check(args.example))
        except ParityFailure:
            outcome.counterexample = args.example
        except PortError as error:
            outcome.counterexample, outcome.failure = args.example, str(error)
        return

    @hypothesis_seed(args.seed)
    @settings(
        max_examples=examples_for(pair, args),
        database=None,
        deadline=None,
        derandomize=False,
        report_multiple_bugs=False,
        # No explain phase: it reruns the failure a hundred times to say which argument
        # could vary; the diagnosis says more, for a fraction of that.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy)
    def parity_property(example):
        if not failed:
            progress.tick()
        try:
            report = check(example)
        except (ParityFailure, PortError):
            if not failed:
                failed.append(True)
                progress.shrinking()
            raise
        if not failed:  # the examples passed while shrinking are not the run's
            outcome.add(report)

    try:
        parity_property()
    except ParityFailure as failure:
        outcome.counterexample = failure.report.example
    except PortError as error:
        outcome.counterexample, outcome.failure = getattr(error, "example", None), str(error)


def _preflight(checker, outcome: Outcome) -> None:
    """Build the port once and bind its weights before any example: a port that cannot
    hold the weights fails the same way on every example, so there is nothing to shrink;
    a bad weight map is a usage error."""
    from parity.ports import PortCrashed, PortError
    from parity.strategies import Example

    pair = checker.pair
    channels = max(pair.min_channels, min(16, pair.max_channels))
    example = Example(2, channels, 3, 5, 1.0, 0)
    x = checker.example_data(example).x.astype("float32")
    if pair.data_format == "channels_last":
        x = x.transpose(0, 2, 3, 1)
    try:
        checker.bindings(checker.port(channels, x), channels)
    except PortCrashed:  # a crash: the examples find its minimal shape
        pass
    except PortError as error:  # weights it cannot hold: no shape is involved
        outcome.failure = str(error)


def _absent_failure(checker, outcome: Outcome) -> str:
    """Why a port that lacks reference parameters fails though the rest may match."""
    absent = checker.undeclared_absent
    judged = (
        f"with them held at zero in the reference, the rest of the port matches it on "
        f"{outcome.examples_run} examples"
        if outcome.counterexample is None
        else "the rest was checked with them held at zero in the reference"
    )
    example = {absent[0]: None}
    flags = " ".join(f"--absent {key}" for key in absent)
    return (
        f"the port has no counterpart for {', '.join(absent)} (use_bias=False?); {judged}. "
        f"If it has none on purpose, declare it: {flags}, or null in the weight map "
        f"({json.dumps(example)})"
    )


def _table(outcome: Outcome, policy) -> str:
    passed = f"{outcome.examples_run} example{'s' if outcome.examples_run != 1 else ''} passed"
    if outcome.counterexample is not None:
        passed += (
            ", then one failed; per tensor, the worst over those and the minimal counterexample"
        )
    rows = [
        f"{outcome.module}: {passed}; a tensor passes when its error against float64 truth is "
        f"at most {policy.factor:g}x the reference's own (or the float32 floor)",
        f"  {'tensor':<28} {'worst ratio':>11} {'port error':>10} {'ref error':>10}  result",
    ]
    for c in outcome.worst.values():
        rows.append(
            f"  {c.name:<28} {c.ratio:>11.3g} {c.relative_error:>10.2e} "
            f"{c.reference_error:>10.2e}  {'pass' if c.passed else 'FAIL'}"
        )
    return "\n".join(rows)


def examples_for(pair, args) -> int:
    """``--examples``, else the registered pair's own count, else DEFAULT_EXAMPLES."""
    if args.examples is not None:
        return args.examples
    known = pair.name in registry.names()
    return (known and registry.definition(pair.name).examples) or DEFAULT_EXAMPLES


def run_module(pair, args, report_dir: Path | None, out=None) -> bool:
    from parity.assertions import checker_for
    from parity.ports import PortLoadError
    from parity.weight_map import WeightMapError

    out = out or sys.stdout
    outcome = Outcome(pair.name)
    total = 1 if args.example is not None else examples_for(pair, args)
    progress = Progress(pair.name, total, sys.stderr)
    started = time.perf_counter()
    checker = checker_for(pair)
    try:
        _preflight(checker, outcome)
        if not outcome.failure:
            _check_examples(pair, args, outcome, progress)
    except (PortLoadError, WeightMapError) as error:
        progress.close()
        raise UsageError(f"{pair.name}: {error}") from None
    progress.close()
    if checker.undeclared_absent and outcome.passed:
        outcome.failure = _absent_failure(checker, outcome)
    if outcome.counterexample is not None and not outcome.failure:
        # Every tensor of the counterexample, gradients included (the search may have
        # stopped at a failing forward pass): the table and the lines below it agree.
        outcome.report = _recheck(pair, args, checker, outcome.counterexample)
        outcome.tally(outcome.report.comparisons)
    if outcome.worst:
        print(_table(outcome, checker.policy), file=out)
    diagnosis = None
    if outcome.passed:
        print(f"{pair.name}: pass ({time.perf_counter() - started:.1f} s)", file=out)
    else:
        print(f"{pair.name}: FAIL", file=out)
        diagnosis = _print_failure(pair, args, outcome, checker, out)
    if checker.undeclared_absent and outcome.counterexample is not None:
        print(_absent_failure(checker, outcome), file=out)
    elif checker.declared_absent:
        print(
            "Note: held at zero in the reference, as declared (the port has no counterpart): "
            + ", ".join(checker.declared_absent),
            file=out,
        )
    for note in checker.notes:
        print(f"Note: {note}", file=out)
    if report_dir is not None:
        path = _write_report(pair, args, report_dir, outcome, diagnosis, checker)
        print(f"{pair.name}: report written to {path}", file=out)
    return outcome.passed


def _print_failure(pair, args, outcome: Outcome, checker, out):
    """The failure, its diagnosis and, where a shape is involved, the minimal
    counterexample and its replay command, printed only once a fresh check reproduces it."""
    from parity.compare import describe_failures
    from parity.diagnose import Diagnosis, diagnose

    example = outcome.counterexample
    if example is None:  # weights the port cannot hold
        print(outcome.failure, file=out)
        return Diagnosis(True, outcome.failure, restates_error=True)
    if args.example is None and not replays(pair, example, args.train):
        outcome.counterexample = None
        outcome.failure = (
            f"the port failed on {example.to_text()} after other examples, and passes when "
            "that example is checked alone: its result depends on what it ran before "
            "(state kept between calls)"
        )
        print(outcome.failure, file=out)
        return Diagnosis(False, outcome.failure, restates_error=True)
    print(
        f"Minimal counterexample: batch={example.batch}, channels={example.channels}, "
        f"H={example.height}, W={example.width}, scale={example.scale}, seed={example.seed}",
        file=out,
    )
    if outcome.failure:
        print(outcome.failure, file=out)
    else:
        outcome.report = outcome.report or _recheck(pair, args, checker, example)
        print(describe_failures(outcome.report.comparisons), file=out)
    diagnosis = None
    if not args.train:  # the diagnosis' hypotheses are about evaluation mode
        diagnosis = diagnose(checker, example)
        # Where a wrong result first appears (a crash has no wrong result to locate).
        divergence = None if outcome.failure else _first_divergence(checker, example)
        trapped = divergence.first if divergence is not None else None
        if not diagnosis.explained and trapped is not None and trapped.trap is not None:
            diagnosis = Diagnosis(
                True,
                f"{trapped.trap.cause}, at {trapped.trap_module} (the reference with that "
                "layer trapped computes what the port computes there, within the policy)",
                diagnosis.findings,
            )
        if not diagnosis.restates_error:
            print(diagnosis.text(), file=out)
        if divergence is not None:
            print(divergence.describe(), file=out)
    print(f"Replay: {replay_command(args, pair.name, example)}", file=out)
    return diagnosis


def _first_divergence(checker, example):
    """Where the port's forward pass first leaves the policy, for a model whose sub-modules
    the weight map matches (``parity.divergence``); None where it cannot say (a tf.keras 2
    port, a port that fails only in its gradients, one sub-module or none)."""
    from parity.divergence import locate
    from parity.ports import PortError

    try:
        divergence = locate(checker, example)
    except (PortError, AttributeError):  # AttributeError: a layer without Keras 3's tracking
        return None
    if divergence.first is None or len(divergence.modules) < 2:
        return None
    return divergence


def _recheck(pair, args, checker, example):
    """The full check of one example, arrays kept: a training step with --train."""
    if not args.train:
        return checker.check(example, keep=True)
    from parity.assertions import training_checker_for
    from parity.training import OPTIMIZERS

    return training_checker_for(pair).check(example, OPTIMIZERS[args.train])


def replays(pair, example, train: str | None = None) -> bool:
    """Whether ``example`` fails when checked as its replay command checks it: a fresh
    checker, the port built on the preflight shape first, then the example alone (one
    training step with ``train``, the optimizer's name)."""
    from parity.engine import Checker
    from parity.ports import PortError
    from parity.training import OPTIMIZERS, TrainingChecker

    checker = Checker(pair)
    _preflight(checker, Outcome(pair.name))
    try:
        if train:
            return not TrainingChecker(checker).check(example, OPTIMIZERS[train]).passed
        return not checker.check(example).passed
    except PortError:
        return True


def _write_report(pair, args, report_dir, outcome, diagnosis, checker) -> Path:
    from parity import report as reporting
    from parity.ports import PortError

    directory = report_dir / pair.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot write --report {directory}: {error.strerror}") from None
    example_report = outcome.report
    if example_report is None and outcome.passed and outcome.worst_example is not None:
        example_report = checker.check(outcome.worst_example, keep=True)
    pictures, drawn = [], None
    if example_report is not None and example_report.truth is not None:
        drawn = _picture_report(checker, outcome) or example_report
        verdict = "pass" if outcome.passed else "FAIL"
        title = f"{pair.name} {verdict} on {drawn.example.to_text()}"
        pictures = reporting.draw_pictures(drawn, directory, title, residual=pair.residual)
    weight_map = {}
    try:
        example = outcome.counterexample or outcome.worst_example
        if example is not None:
            x = checker.example_data(example).x
            if pair.data_format == "channels_last":
                x = x.transpose(0, 2, 3, 1)
            instance = checker.port(example.channels, x.astype("float32"))
            weight_map = {
                b.torch_key: instance.name_of(b.variable)
                for b in checker.bindings(instance, example.channels)
            }
    except PortError:
        pass
    counterexample = outcome.counterexample
    report = reporting.build_report(
        module=pair.name,
        port=args.port or (args.spec or "bundled"),
        data_format=pair.data_format,
        passed=outcome.passed,
        examples_run=outcome.examples_run,
        policy=checker.policy,
        tally=outcome.worst,
        example_report=example_report,
        counterexample=counterexample,
        replay=None if counterexample is None else replay_command(args, pair.name, counterexample),
        diagnosis=diagnosis,
        error=outcome.failure or None,
        weight_map=weight_map,
        pictures=pictures,
        worst_example=counterexample or outcome.worst_example,
        drawn=drawn,
    )
    return reporting.write_json(report, directory)


PICTURE_SIDES = (9, 12)
"""H != W, both above 8, H*W off multiples of 8: room for a scramble of positions to show.
A minimal counterexample (1x2 pixels) shows nothing."""

PICTURE_SCALES = (None, 0.1, 1.0, 3.0)  # None: the scale of the example found


def _picture_report(checker, outcome: Outcome):
    """The example the pictures show: at batch 2 and PICTURE_SIDES, with the found
    example's scale and seed first, then a few others. Failing: the first of them that
    fails too; passing: the worst of them. None when none qualifies (the pictures then show
    the example found itself)."""
    from parity.ports import PortError
    from parity.strategies import Example

    found = outcome.worst_example if outcome.passed else outcome.counterexample
    if found is None:
        return None
    pair = checker.pair
    channels = min(max(16, pair.min_channels), pair.max_channels)
    reports = []
    for i, scale in enumerate(PICTURE_SCALES):
        example = Example(2, channels, *PICTURE_SIDES, scale or found.scale, found.seed + i)
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


# -- legacy tf.keras ------------------------------------------------------------------------------


def _keras_major(args) -> str:
    """'2' for a port written for Keras 2 (asked for, or detected from its source)."""
    if args.keras:
        return args.keras
    if args.legacy_keras or ((args.port or args.spec) and looks_legacy(args.port or args.spec)):
        return "2"
    return "3"


def _enable_legacy_keras() -> str:
    """Hand tf.keras 2 out as tf.keras (and ``keras`` to the port): possible only before
    TensorFlow is imported."""
    if importlib.util.find_spec("tf_keras") is None:
        return (
            "the port is written for Keras 2, which runs here as tf-keras: install it with "
            f"`pip install --no-deps tf-keras~={_tensorflow_version()}` "
            "(or check it with --keras 3)"
        )
    if "tensorflow" in sys.modules and not legacy_keras_enabled():
        return (
            "a Keras 2 port needs TF_USE_LEGACY_KERAS=1 before TensorFlow is imported; "
            "run parity check in a fresh process (or set the variable yourself)"
        )
    os.environ[LEGACY_ENV] = "1"
    return ""


def _tensorflow_version() -> str:
    from importlib import metadata

    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            return ".".join(metadata.version(name).split(".")[:2]) + ".0"
        except metadata.PackageNotFoundError:
            continue
    return "2.21.0"


# -- bench -------------------------------------------------------------------------------------


def _fix_threads(threads: int) -> None:
    """The same thread count for both frameworks, set before either is imported."""
    for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"


def run_bench(args) -> int:
    import json

    import torch

    from parity import bench

    torch.set_num_threads(args.threads)
    modules = args.modules or _benched()

    def progress(text):
        print(text, file=sys.stderr, flush=True)

    print(
        f"threads: {args.threads} per framework; median of {args.repeats} runs after "
        f"{args.warmup} warm-up runs"
    )
    if args.lean:
        rows = bench.lean_pam(repeats=args.repeats, progress=progress)
        for row in rows:
            time_text = "-" if row["backward_ms"] is None else f"{row['backward_ms']:.0f} ms"
            peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f} MB"
            parity = row.get("parity")
            verdict = ""
            if parity is not None:
                verdict = (
                    f"  vs PAM_Module float64: error {parity['ratio']:.2f}x what float32 may "
                    f"err (allowed {parity['allowed_ratio']:g}x, "
                    f"{'pass' if parity['passed'] else 'FAIL'})"
                )
            elif row["implementation"] != "dense" and row["backward_ms"] is not None:
                verdict = "  vs PAM_Module: not checked, its float64 attention does not fit"
            print(
                f"pam {row['shape']} {row['implementation']:<12} "
                f"fwd+bwd {time_text:>10}  peak {peak:>9}{verdict}"
            )
    else:
        throughput = bench.matmul_gflops()
        print(
            f"matmul 2048x2048 float32: torch {throughput['torch']:.0f} GFLOP/s, "
            f"tensorflow {throughput['tensorflow']:.0f} GFLOP/s"
        )
        shapes = {m: args.shape or bench.SHAPES[m] for m in modules}
        rows = bench.run(
            shapes,
            repeats=args.repeats,
            warmup=args.warmup,
            memory=not args.no_memory,
            modes=args.modes,
            variant_names=args.variant,
            progress=progress,
        )
        print(bench.table(rows, throughput))
        if args.plot:
            bench.plot(rows, args.plot)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(bench.rows_as_json(rows), handle, indent=2)
    return EXIT_PARITY


# -- convert -----------------------------------------------------------------------------------


def run_convert(args) -> int:
    from parity.checkpoint import CheckpointError, convert

    try:
        conversion = convert(
            args.source, args.target, module=args.module, prefix=args.prefix, ignore=args.ignore
        )
    except CheckpointError as error:
        print(f"parity: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # the output checked up front, then changed under us
        reason = error.strerror or str(error)
        print(f"parity: error: {error.filename or args.target}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    print(conversion.text(args.source, args.target))
    return EXIT_PARITY


# -- entry point -------------------------------------------------------------------------------


class _Interrupts:
    """Ctrl-C as a flag as well as an exception. Python raises KeyboardInterrupt in whatever
    code runs when the signal arrives, and one raised inside a garbage-collection callback
    (JAX registers one) is swallowed: the flag is checked again between examples."""

    def __init__(self):
        self.seen = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc_info):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            sys.unraisablehook = self.previous_hook
            self.previous = None
        self.seen = False

    def _unraisable(self, unraisable):
        """A swallowed Ctrl-C is not worth a traceback: the flag ends the run."""
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            self.previous_hook(unraisable)

    def _handle(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt


INTERRUPTS = _Interrupts()


def main(argv: list[str] | None = None) -> int:
    """Run a command; Ctrl-C ends it with one line and status 130, whatever was running."""
    try:
        with INTERRUPTS:
            return _main(argv)
    except KeyboardInterrupt:
        end_progress_line = "\n" if sys.stderr.isatty() else ""
        print(f"{end_progress_line}parity: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        VALIDATORS[args.command](args)
    except (UsageError, NotWritable) as error:
        print(f"parity: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    sys.dont_write_bytecode = True  # a port's module is imported; leave its folder as it was
    # Softmax over one position (PAM on 1x1, CAM with one channel) is expected here.
    warnings.filterwarnings("ignore", message="You are using a softmax over axis")
    if args.command == "check":  # Keras' advice to the port's author (input_shape=...) is
        # not the check's output, and a function port repeats it for every shape it is traced on
        warnings.filterwarnings("ignore", module=r"(keras|tf_keras|tensorflow)(\.|$)")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.command == "check" and _keras_major(args) == "2":
        problem = _enable_legacy_keras()
        if problem:
            print(f"parity: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "bench":
        _fix_threads(args.threads)
    import_keras_quietly()
    if args.command == "convert":
        return run_convert(args)
    if args.command == "bench":
        return run_bench(args)
    from hypothesis.configuration import set_hypothesis_home_dir

    # Hypothesis and matplotlib keep caches in the working directory and the home folder:
    # give them a scratch folder, so that nothing outside --report is written.
    with tempfile.TemporaryDirectory(prefix="parity-") as scratch:
        set_hypothesis_home_dir(scratch)
        os.environ.setdefault("MPLCONFIGDIR", scratch)
        try:
            report_dir = None if args.report is None else Path(args.report)
            pairs = _pairs(args)
            check_pairs(args, pairs)
            results = [run_module(pair, args, report_dir) for pair in pairs]
        except (UsageError, NotWritable) as error:
            print(f"parity: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            set_hypothesis_home_dir(None)
    return EXIT_PARITY if all(results) else EXIT_MISMATCH


def run() -> None:
    """The installed command: ``main``, with an interrupted run ended at once. After the
    one line, a framework's exit handlers (TensorFlow's, JAX's) could still run into the
    interrupt and end the process by the signal instead of status 130."""
    status = main()
    if status == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
