"""The ``parity`` command: check a Keras port against the PyTorch reference.

Exit status: 0 parity holds; 1 the port fails (a counterexample, a crash, or weights that
cannot be mapped); 2 the check could not run (bad arguments, a port that cannot be
imported, a factory that raises, an output that cannot be written: one line, nothing
written); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from parity import registry
from parity.bench import KERAS_MODES
from parity.driver import DEFAULT_EXAMPLES
from parity.frameworks import (
    enable_legacy_keras,
    fix_threads,
    keras_major,
    strict_float32,
)
from parity.interrupts import INTERRUPTS
from parity.quiet import import_keras_quietly
from parity.selection import SelectionError, check_names
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
    try:
        check_names(tuple(args.modules), args.variant)
    except SelectionError as error:
        raise UsageError(str(error)) from None
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
    from parity.selection import Selection, select_pairs

    selection = Selection(
        modules=tuple(args.modules),
        spec=args.spec,
        variant=args.variant,
        port=args.port,
        weight_map=args.weight_map,
        absent=tuple(args.absent),
        data_format=args.data_format,
    )
    try:
        return select_pairs(selection)
    except SelectionError as error:
        raise UsageError(str(error)) from None


def _keras_major(args) -> str:
    """'2' for a port written for Keras 2 (asked for, or detected from its source)."""
    target = args.port or args.spec
    return keras_major(keras=args.keras, legacy_keras=args.legacy_keras, target=target)


def replay_command(args, module: str, example) -> str:
    """The ``parity check`` command that replays ``example`` with these arguments' port."""
    from parity.replay import port_flags
    from parity.replay import replay_command as command

    flags = port_flags(
        port=args.port,
        weight_map=args.weight_map,
        absent=args.absent,
        legacy_keras=args.legacy_keras,
        keras=args.keras,
        data_format=args.data_format,
    )
    target = f"--spec {args.spec}" if args.spec else module
    if args.variant is not None:
        target += f" --variant {args.variant}"
    if args.no_tf32:
        flags += " --no-tf32"
    return command(target, example, flags=flags.strip(), train=args.train)


def _budget(pair, args):
    """The examples to run: --example alone, or a search of --examples from --seed."""
    from parity.driver import Budget, examples_for

    requested = args.examples
    if requested is None and args.variant is not None:
        requested = registry.definition(pair.name).size_variant(args.variant).examples
    return Budget(examples=examples_for(pair, requested), seed=args.seed, example=args.example)


# -- printing one module's check -------------------------------------------------------------


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


def _table(outcome, policy) -> str:
    passed = f"{outcome.examples_run} example{'s' if outcome.examples_run != 1 else ''} passed"
    if outcome.failed_on is not None:
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


def run_module(pair, args, report_dir: Path | None, out=None) -> bool:
    from parity.assertions import checker_for
    from parity.driver import absent_failure, find_counterexample, procedure_for
    from parity.ports import PortLoadError
    from parity.report import write_report
    from parity.weight_map import WeightMapError

    out = out or sys.stdout
    chosen = _budget(pair, args)
    total = 1 if args.example is not None else chosen.examples
    progress = Progress(pair.name, total, sys.stderr)
    started = time.perf_counter()
    checker = checker_for(pair)
    try:
        outcome = find_counterexample(
            checker,
            procedure_for(args.train),
            chosen,
            listener=progress,
            before_each=INTERRUPTS.check,
        )
    except (PortLoadError, WeightMapError) as error:
        raise UsageError(f"{pair.name}: {error}") from None
    finally:
        progress.close()
    if outcome.worst:
        print(_table(outcome, checker.policy), file=out)
    diagnosis = None
    if outcome.passed:
        print(f"{pair.name}: pass ({time.perf_counter() - started:.1f} s)", file=out)
    else:
        print(f"{pair.name}: FAIL", file=out)
        diagnosis = _print_failure(pair, args, outcome, checker, out)
    if checker.undeclared_absent and outcome.counterexample is not None:
        print(absent_failure(checker, outcome), file=out)
    elif checker.declared_absent:
        print(
            "Note: held at zero in the reference, as declared (the port has no counterpart): "
            + ", ".join(checker.declared_absent),
            file=out,
        )
    for note in checker.notes:
        print(f"Note: {note}", file=out)
    if report_dir is not None:
        counterexample = outcome.counterexample
        path = write_report(
            checker,
            outcome,
            diagnosis,
            directory=report_dir / pair.name,
            port=args.port or (args.spec or "bundled"),
            replay=None
            if counterexample is None
            else replay_command(args, pair.name, counterexample),
        )
        print(f"{pair.name}: report written to {path}", file=out)
    return outcome.passed


def _print_failure(pair, args, outcome, checker, out):
    """The failure, its diagnosis and, where a shape is involved, the minimal
    counterexample and its replay command (the driver confirmed that it replays)."""
    from parity.compare import describe_failures
    from parity.diagnose import Diagnosis
    from parity.explain import explain

    example = outcome.counterexample
    if example is None:  # weights the port cannot hold, or a failure that did not replay
        print(outcome.failure, file=out)
        return Diagnosis(outcome.unconfirmed is None, outcome.failure, restates_error=True)
    print(
        f"Minimal counterexample: batch={example.batch}, channels={example.channels}, "
        f"H={example.height}, W={example.width}, scale={example.scale}, seed={example.seed}",
        file=out,
    )
    if outcome.failure:
        print(outcome.failure, file=out)
    else:
        print(describe_failures(outcome.report.comparisons), file=out)
    diagnosis = None
    if not args.train:  # the diagnosis' hypotheses are about evaluation mode
        explanation = explain(checker, example, crashed=bool(outcome.failure))
        diagnosis = explanation.diagnosis
        if not diagnosis.restates_error:
            print(diagnosis.text(), file=out)
        if explanation.divergence is not None:
            print(explanation.divergence.describe(), file=out)
    print(f"Replay: {replay_command(args, pair.name, example)}", file=out)
    return diagnosis


# -- bench -------------------------------------------------------------------------------------


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
        problem = enable_legacy_keras()
        if problem:
            print(f"parity: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "bench":
        fix_threads(args.threads)
    if args.command == "check" and args.no_tf32:
        strict_float32()
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
