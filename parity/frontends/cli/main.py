"""The ``parity`` command: check a Keras port against the PyTorch reference, and print
what was found (the arguments and their checks live in ``parity.frontends.cli.arguments``).

Exit status: 0 parity holds; 1 the port fails (a counterexample, a crash, or weights that
cannot be mapped); 2 the check could not run (bad arguments, a port that cannot be
imported, a factory that raises, an output that cannot be written: one line, nothing
written); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

from parity.backends.quiet import SOFTMAX_OVER_ONE, import_keras_quietly
from parity.backends.which_keras import (
    enable_legacy_keras,
    fix_threads,
    keras_backend_problem,
    strict_float32,
    tf_keras_missing,
)
from parity.core import registry
from parity.core.errors import CannotCheck, Keras2Needed, UsageError
from parity.frontends.cli.arguments import (
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_PARITY,
    EXIT_USAGE,
    VALIDATORS,
    benched,
    build_parser,
    check_pairs,
    port_keras_major,
)
from parity.frontends.cli.interrupts import INTERRUPTS

# No module-level import of TensorFlow, PyTorch or Keras: a usage error is answered without
# them (they take 10-20 s to import). Arguments and their checks:
# ``parity.frontends.cli.arguments``.


# -- what to check -----------------------------------------------------------------------------


def _pairs(args) -> list:
    from parity.frontends.cli.selection import Selection, select_pairs

    selection = Selection(
        modules=tuple(args.modules),
        spec=args.spec,
        variant=args.variant,
        port=args.port,
        weight_map=args.weight_map,
        absent=tuple(args.absent),
        data_format=args.data_format,
    )
    return select_pairs(selection)


def replay_command(args, module: str, example) -> str:
    """The ``parity check`` command that replays ``example`` with these arguments' port."""
    from parity.core.replay import Origin
    from parity.core.replay import replay_command as command

    origin = Origin(
        port=args.port,
        weight_map=args.weight_map,
        absent=tuple(args.absent),
        legacy_keras=args.legacy_keras,
        keras=args.keras,
        data_format=args.data_format,
        variant=args.variant,
        no_tf32=args.no_tf32,
        factor=args.factor,
        export=args.export,
    )
    target = f"--spec {args.spec}" if args.spec else module
    return command(target, example, origin=origin, train=args.train)


def _budget(pair, args):
    """The examples to run: --example alone, or a search of --examples from --seed."""
    from parity.run.driver import Budget, examples_for

    requested = args.examples
    if requested is None and args.variant is not None:
        requested = registry.definition(pair.name).size_variant(args.variant).examples
    if requested is None and args.export is not None:
        from parity.run.exported import DEFAULT_EXPORT_EXAMPLES

        requested = DEFAULT_EXPORT_EXAMPLES
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


def _table(outcome, policy, precision: str = "float32") -> str:
    passed = f"{outcome.examples_run} example{'s' if outcome.examples_run != 1 else ''} passed"
    if outcome.failed_on is not None:
        passed += (
            ", then one failed; per tensor, the worst over those and the minimal counterexample"
        )
    rows = [
        f"{outcome.module}: {passed}; a tensor passes when {policy.rule(precision)}",
        f"  {'tensor':<28} {'worst ratio':>11} {'port error':>10} {'ref error':>10}  result",
    ]
    for c in outcome.worst.values():
        rows.append(
            f"  {c.name:<28} {c.ratio:>11.3g} {c.relative_error:>10.2e} "
            f"{c.reference_error:>10.2e}  {'pass' if c.passed else 'FAIL'}"
        )
    return "\n".join(rows)


def policy_for(args):
    """The tolerance policy asked for (``--factor``), else the default."""
    from parity.core.policy import DEFAULT_POLICY

    return DEFAULT_POLICY if args.factor is None else replace(DEFAULT_POLICY, factor=args.factor)


def run_module(pair, args, report_dir: Path | None, out=None) -> bool:
    from parity.frontends.report import write_report
    from parity.run.assertions import checker_for
    from parity.run.driver import (
        absent_failure,
        find_counterexample,
        procedure_for,
        untracked_failure,
    )

    out = out or sys.stdout
    chosen = _budget(pair, args)
    total = 1 if args.example is not None else chosen.examples
    progress = Progress(pair.name, total, sys.stderr)
    started = time.perf_counter()
    if args.export:
        from parity.run.exported import exported_checker

        checker = exported_checker(pair, args.export, policy_for(args))
    else:
        checker = checker_for(pair, policy_for(args))
    try:
        outcome = find_counterexample(
            checker,
            procedure_for(args.train),
            chosen,
            listener=progress,
            before_each=INTERRUPTS.check,
        )
    except CannotCheck as error:
        error.module = pair.name
        raise
    finally:
        progress.close()
    trace = None
    if getattr(checker, "measured", None):
        from parity.diagnosis.quantization import int8_trace
        from parity.run.exported import int8_table

        print(int8_table(checker.measured, pair.name), file=out)
        try:
            trace = int8_trace(checker)
        except Exception as error:  # the measurement stands without it
            print(f"{pair.name}: the int8 file's lines were not traced: {error}", file=out)
        else:
            if trace is None:
                print(
                    f"{pair.name}: the int8 file's lines were not traced (a forward pass of "
                    "over 120 lines, or a file whose tensors cannot be listed)",
                    file=out,
                )
            else:
                print(trace.describe(), file=out)
    elif outcome.worst:
        print(_table(outcome, checker.policy, checker.precision), file=out)
    diagnosis = localization = None
    verdict = "measured" if getattr(checker, "measured", None) else "pass"
    if outcome.passed:
        print(f"{pair.name}: {verdict} ({time.perf_counter() - started:.1f} s)", file=out)
    else:
        print(f"{pair.name}: FAIL", file=out)
        diagnosis, localization = _print_failure(pair, args, outcome, checker, out)
    if checker.untracked and outcome.counterexample is not None:
        print(untracked_failure(checker, outcome), file=out)
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
            localization=localization,
            quantization=trace,
        )
        print(f"{pair.name}: report written to {path}", file=out)
    return outcome.passed


def _print_failure(pair, args, outcome, checker, out):
    """The failure, its diagnosis and, where a shape is involved, the minimal
    counterexample and its replay command (the driver confirmed that it replays). Returns
    the diagnosis and the localization (None where there is none), for the report."""
    from parity.core.policy import describe_failures
    from parity.diagnosis.diagnose import Diagnosis
    from parity.diagnosis.explain import explain

    example = outcome.counterexample
    if example is None:  # weights the port cannot hold, or a failure that did not replay
        print(outcome.failure, file=out)
        return Diagnosis(outcome.unconfirmed is None, outcome.failure, restates_error=True), None
    print(
        f"Minimal counterexample: batch={example.batch}, channels={example.channels}, "
        f"H={example.height}, W={example.width}, scale={example.scale}, seed={example.seed}",
        file=out,
    )
    if outcome.failure:
        print(outcome.failure, file=out)
    else:
        print(describe_failures(outcome.report.comparisons), file=out)
    diagnosis = localization = None
    if not args.train:  # the diagnosis' hypotheses are about evaluation mode
        explanation = explain(checker, example, crashed=bool(outcome.failure))
        diagnosis, localization = explanation.diagnosis, explanation.localization
        for line in explanation.lines():
            print(line, file=out)
    print(f"Replay: {replay_command(args, pair.name, example)}", file=out)
    _say_passing_data_format(args, checker, out)
    return diagnosis, localization


def _say_passing_data_format(args, checker, out) -> None:
    """A note where the port passes in the other data format (channels-first read as
    channels-last is the commonest way to fail everything), with the command that passes."""
    import argparse

    from parity.diagnosis.data_format import TRIAL_EXAMPLES, passing_data_format
    from parity.run.driver import procedure_for

    if args.port is None:  # the bundled ports declare their layout
        return
    found = passing_data_format(checker, procedure_for(args.train), args.seed)
    if found is None:
        return
    trial, example = found
    fixed = argparse.Namespace(**{**vars(args), "data_format": trial.data_format})
    print(
        f"Note: the port passes when checked as {trial.data_format} ({TRIAL_EXAMPLES} "
        f"examples): add --data-format {trial.data_format}: "
        f"{replay_command(fixed, checker.pair.name, example)}",
        file=out,
    )


# -- bench -------------------------------------------------------------------------------------


def run_bench(args) -> int:
    import json

    from parity.backends.timing import matmul_gflops
    from parity.backends.torch.reference import set_threads
    from parity.frontends import bench

    set_threads(args.threads)
    modules = args.modules or benched()

    def progress(text):
        print(text, file=sys.stderr, flush=True)

    print(
        f"threads: {args.threads} per framework; median of {args.repeats} runs after "
        f"{args.warmup} warm-up runs"
    )
    if args.lean:
        rows = [
            row
            for module in args.modules or bench.leaned()
            for row in bench.lean_rows(module, repeats=args.repeats, progress=progress)
        ]
        for row in rows:
            print(_lean_line(row))
    else:
        throughput = matmul_gflops()
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


def _lean_line(row: dict) -> str:
    """One row of ``parity bench --lean``: time, peak memory and the lean port's verdict."""
    time_text = "-" if row["backward_ms"] is None else f"{row['backward_ms']:.0f} ms"
    peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f} MB"
    parity = row.get("parity")
    verdict = ""
    if parity is not None:
        verdict = (
            f"  vs the reference in float64: error {parity['ratio']:.2f}x what float32 may "
            f"err (allowed {parity['allowed_ratio']:g}x, {'pass' if parity['passed'] else 'FAIL'})"
        )
    elif row["implementation"] != "dense" and row["backward_ms"] is not None:
        verdict = "  vs the reference: not checked, its float64 attention does not fit"
    return (
        f"{row['module']} {row['shape']} {row['implementation']:<12} "
        f"fwd+bwd {time_text:>10}  peak {peak:>9}{verdict}"
    )


# -- convert -----------------------------------------------------------------------------------


def run_convert(args) -> int:
    from parity.frontends.convert import convert

    try:
        conversion = convert(
            args.source, args.target, module=args.module, prefix=args.prefix, ignore=args.ignore
        )
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
    args.argv = sys.argv[1:] if argv is None else list(argv)  # to run again, as it was given
    try:
        VALIDATORS[args.command](args)
        if keras_backend_problem():
            raise UsageError(keras_backend_problem())
    except CannotCheck as error:
        return _cannot_check(error)
    sys.dont_write_bytecode = True  # a port's module is imported; leave its folder as it was
    # Softmax over one position (PAM on 1x1, CAM with one channel) is expected here.
    warnings.filterwarnings("ignore", message=SOFTMAX_OVER_ONE)
    if args.command == "check":  # Keras' advice to the port's author (input_shape=...) is
        # not the check's output, and a function port repeats it for every shape it is traced on
        warnings.filterwarnings("ignore", module=r"(keras|tf_keras|tensorflow)(\.|$)")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if args.command == "check" and port_keras_major(args) == "2":
        problem = enable_legacy_keras()
        if problem:
            print(f"parity: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    if args.command == "bench":
        fix_threads(args.threads)
    if args.command == "check" and args.no_tf32:
        strict_float32()
    try:
        import_keras_quietly()
        if args.command == "convert":
            return run_convert(args)
        if args.command == "bench":
            return run_bench(args)
        return _check(args)
    except Keras2Needed as error:
        if args.keras or args.legacy_keras:
            return _cannot_check(error)
        return _under_tf_keras(argv, error)
    except CannotCheck as error:
        return _cannot_check(error)


def _under_tf_keras(argv: list[str] | None, error: Keras2Needed) -> int:
    """The same command again under tf.keras 2, in a fresh process (tf.keras 2 is chosen
    before TensorFlow is imported), with a note saying why; or one line and exit 2 where
    tf-keras is not installed."""
    import subprocess

    problem = tf_keras_missing()
    if problem:
        print(f"parity: error: {error}; {problem}", file=sys.stderr)
        return EXIT_USAGE
    argv = sys.argv[1:] if argv is None else argv
    print(
        f"Note: the port fails under Keras 3 the way Keras 2 code does ({error.sign}): "
        "checked under tf.keras 2 (--keras 2 says so up front)",
        flush=True,
    )
    command = [sys.executable, "-m", "parity", *argv, "--keras", "2"]
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def _cannot_check(error: CannotCheck) -> int:
    """The one line of a check that could not run, and its exit status."""
    where = f"{error.module}: " if error.module else ""
    print(f"parity: error: {where}{error}", file=sys.stderr)
    return EXIT_USAGE


def _check(args) -> int:
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
            if _keras3_in_reserve(args):
                return _or_under_keras3(args, pairs, report_dir)
            results = [run_module(pair, args, report_dir) for pair in pairs]
        finally:
            set_hypothesis_home_dir(None)
    return EXIT_PARITY if all(results) else EXIT_MISMATCH


def _keras3_in_reserve(args) -> bool:
    """A port run under tf.keras 2 because it uses ``tf.keras``, with no call of Keras 2's own
    API and no flag: Keras 3 may be what it was written for."""
    from parity.backends.which_keras import legacy_keras_enabled, written_for_keras2

    target = args.port or args.spec
    return bool(
        target
        and legacy_keras_enabled()
        and not (args.keras or args.legacy_keras)
        and not written_for_keras2(target)
    )


def _or_under_keras3(args, pairs, report_dir) -> int:
    """The check under tf.keras 2, its output held back; where the port could not even be
    built there, the same command under Keras 3 instead, with a note, when that one reaches
    a verdict (exit 0 or 1)."""
    import io
    import subprocess

    from parity.backends.ports import BUILD_FAILURES
    from parity.backends.which_keras import LEGACY_ENV

    BUILD_FAILURES.clear()
    held = io.StringIO()
    results = [run_module(pair, args, report_dir, out=held) for pair in pairs]
    if BUILD_FAILURES:
        command = [sys.executable, "-m", "parity", *args.argv, "--keras", "3"]
        environment = {k: v for k, v in os.environ.items() if k != LEGACY_ENV}
        done = subprocess.run(command, capture_output=True, text=True, env=environment)
        if done.returncode in (EXIT_PARITY, EXIT_MISMATCH):
            print(
                f"Note: the port uses tf.keras and cannot be built under tf.keras 2 "
                f"({BUILD_FAILURES[0].splitlines()[0][:160]}): checked under Keras 3, which "
                "TensorFlow 2.16 and later hand out as tf.keras (--keras 3 says so up front)"
            )
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            return done.returncode
    sys.stdout.write(held.getvalue())
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
