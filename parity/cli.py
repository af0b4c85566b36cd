"""The ``parity`` command: check a port against the reference and print what was found."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from parity.quiet import import_keras_quietly

EXIT_PARITY, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class _Tally:
    """The worst of each tensor over all examples of one module."""

    def __init__(self):
        self.worst = {}
        self.examples = 0

    def add(self, report):
        self.examples += 1
        for c in report.comparisons:
            if c.name not in self.worst or c.ratio > self.worst[c.name].ratio:
                self.worst[c.name] = c


def _table(module: str, tally: _Tally, policy) -> str:
    rows = [
        f"{module}: {tally.examples} examples; a tensor passes when its error against float64 "
        f"truth is at most {policy.factor:g}x the reference's own (or the float32 floor)",
        f"  {'tensor':<28} {'worst ratio':>11} {'port error':>10} {'ref error':>10}  result",
    ]
    for c in tally.worst.values():
        rows.append(
            f"  {c.name:<28} {c.ratio:>11.3g} {c.relative_error:>10.2e} "
            f"{c.reference_error:>10.2e}  {'pass' if c.passed else 'FAIL'}"
        )
    return "\n".join(rows)


def _check_module(pair, args, out) -> bool:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed

    import parity.strategies as pst
    from parity.assertions import ParityFailure, assert_parity, checker_for, replay_command
    from parity.compare import describe_failures

    tally = _Tally()
    started = time.perf_counter()
    if args.example is not None:
        report = checker_for(pair).check(args.example)
        tally.add(report)
        print(_table(pair.name, tally, checker_for(pair).policy), file=out)
        if not report.passed:
            print(describe_failures(report.comparisons), file=out)
        return report.passed

    @hypothesis_seed(args.seed)
    @settings(
        max_examples=args.examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(pst.examples(min_channels=pair.min_channels, max_channels=pair.max_channels))
    def parity_property(example):
        tally.add(assert_parity(pair, example))

    try:
        parity_property()
    except ParityFailure as failure:
        report = failure.report
        print(_table(pair.name, tally, checker_for(pair).policy), file=out)
        print(
            f"{pair.name}: FAIL. Minimal counterexample: batch={report.example.batch}, "
            f"channels={report.example.channels}, H={report.example.height}, "
            f"W={report.example.width}, scale={report.example.scale}, seed={report.example.seed}",
            file=out,
        )
        print(describe_failures(report.comparisons), file=out)
        print(f"Replay: {replay_command(pair.name, report.example)}", file=out)
        return False
    print(_table(pair.name, tally, checker_for(pair).policy), file=out)
    print(f"{pair.name}: pass ({time.perf_counter() - started:.1f} s)", file=out)
    return True


def _example(text: str):
    from parity.strategies import Example

    try:
        return Example.from_text(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parity", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check the Keras port against the PyTorch reference on random examples",
        description="Check the bundled Keras port against the PyTorch reference: outputs "
        "and gradients (input and every parameter) on random shapes, scales and weights.",
    )
    check.add_argument(
        "modules", nargs="*", metavar="MODULE", help="pam and/or cam (default: both)"
    )
    check.add_argument(
        "--examples", type=_positive, default=100, help="examples per module (default 100)"
    )
    check.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0)")
    check.add_argument(
        "--example",
        type=_example,
        metavar="B,C,H,W,SCALE,SEED",
        help="replay one example exactly, as printed by a failure",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Softmax over one position (PAM on 1x1, CAM with one channel) is expected here.
    warnings.filterwarnings("ignore", message="You are using a softmax over axis")
    import_keras_quietly()
    from parity.spec import BUILTIN_PAIRS

    unknown = [name for name in args.modules if name not in BUILTIN_PAIRS]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; expected one of {sorted(BUILTIN_PAIRS)}")
    names = args.modules or list(BUILTIN_PAIRS)
    results = [_check_module(BUILTIN_PAIRS[name], args, sys.stdout) for name in names]
    return EXIT_PARITY if all(results) else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
