"""Run one example through the reference (float64 and float32) and the port, and compare.

All tensors are compared in the reference's layout: the port's activations are converted
from its data format to NCHW and its weight gradients back to PyTorch's layouts, with the
same strict bindings that loaded its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from parity.backends.ports import describe_error, instantiate, tensorflow_named
from parity.backends.protocol import PortInstance, Reference, port_framework
from parity.backends.torch.reference import Forward, TorchReference, named_outputs
from parity.backends.torch.rounding import noisy_reruns
from parity.backends.weights import load_state_dict
from parity.core.errors import (
    MissingOutputs,
    OutputDtypeMismatch,
    OutputShapeMismatch,
    PortCrashed,
    PortError,
)
from parity.core.layout import Binding, from_data_format, to_data_format
from parity.core.policy import (
    DEFAULT_POLICY,
    UNIT_ROUNDOFF,
    TensorComparison,
    TolerancePolicy,
    describe_failures,
    judge,
)
from parity.core.spec import ModulePair
from parity.core.strategies import Example, ExampleData, float32_values

PRECISIONS = {"float32": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
"""Compute dtype -> the Keras dtype policy the port is built under (weights stay float32)."""

Results = dict[str, np.ndarray]


@dataclass
class ExampleReport:
    pair: str
    example: Example
    comparisons: list[TensorComparison] = field(default_factory=list)
    # Kept for diagnosis and pictures: truth, reference (float32), port, all NCHW/OIHW.
    truth: Results | None = None
    reference: Results | None = None
    port: Results | None = None
    x: np.ndarray | None = None  # the input, NCHW
    floor: dict | None = None  # compare()'s floor arguments (see judge)
    precision: str = "float32"  # the compute dtype judged: a failure's words and replay say it

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def describe_failures(self) -> str:
        """A line per failing tensor (``parity.core.policy.describe_failures``)."""
        return describe_failures(self.comparisons, self.precision)

    def worst(self) -> TensorComparison:
        return max(self.comparisons, key=lambda c: c.ratio)


class LoadedPort(NamedTuple):
    x: np.ndarray  # the input, in the port's layout
    instance: PortInstance
    bindings: list[Binding]
    trained: list[Binding]  # those of the reference's parameters (not its buffers)


class Checker:
    """Checks examples of one module pair, reusing modules and ports across examples.

    The reference modules (float32 and float64) are built once per channel count, the port
    once per channel count (once per input shape for a port written as a function, which
    may read static shapes); each example only loads new weights.
    """

    def __init__(
        self,
        pair: ModulePair,
        policy: TolerancePolicy = DEFAULT_POLICY,
        mode: str | None = None,
        precision: str = "float32",
    ):
        self.framework = port_framework()
        mode = mode or self.framework.default_mode()
        self.framework.check_mode(mode)
        if precision not in PRECISIONS:
            raise ValueError(
                f"Expected one of {set(PRECISIONS)}. Received: precision={precision!r}"
            )
        self.pair = pair
        self.mode = mode
        self.precision = precision
        self.policy = replace(policy, unit=UNIT_ROUNDOFF[precision])
        self.reference_dtype = precision
        self.references: Reference = TorchReference(pair.make_reference, precision)
        self._layer_ports: dict[int, PortInstance] = {}
        self._function_ports: dict[tuple, PortInstance] = {}
        self.one_instance_per_shape = False  # set when the port runs only on its first shape
        # Reference parameters the port has no counterpart for (use_bias=False), held at
        # zero in the reference; those the user declared absent pass.
        self.held_at_zero: tuple[str, ...] = ()
        self.declared_absent: tuple[str, ...] = ()
        # (reference parameter, port variable, shape) held in variables the port's framework
        # does not track: loaded and judged all the same, and a failure whatever the rest.
        self.untracked: tuple[tuple[str, str, tuple], ...] = ()
        self.notes: list[str] = []  # said with the verdict; not failures

    def fresh(self) -> Checker:
        """A checker like this one that has run nothing (a replay's)."""
        return Checker(self.pair, self.policy, self.mode, self.precision)

    # -- inputs -------------------------------------------------------------------------
    def example_data(self, example: Example) -> ExampleData:
        rng = np.random.default_rng(example.seed)
        module = self.reference(example.channels)
        state = {k: float32_values(v) for k, v in self.pair.randomize(module, rng).items()}
        x = float32_values(example.scale * rng.standard_normal(example.shape))
        for key in self.held_at_zero:
            state[key] = np.zeros_like(state[key])
        return ExampleData(state, x, example.seed)

    # -- the reference ------------------------------------------------------------------
    def reference(self, channels: int, dtype: str = "float64"):
        """The pair's reference module (a ``torch.nn.Module``) for this channel count."""
        return self.references.module(channels, dtype)

    def run_reference(
        self, example, data, dtype: str, gradients, forward: Forward | None = None
    ) -> Results:
        """The reference's outputs (and gradients, but for parameters the port has no
        counterpart for) in ``dtype`` (a name: "float64"); ``forward(module, x)`` replaces
        its forward pass, for the diagnosis' variants of the reference."""
        return self.references.run(
            example.channels,
            data,
            dtype,
            gradients=gradients,
            forward=forward,
            skip=self.held_at_zero,
        )

    def reference_deviations(self, example, data, gradients) -> Results:
        """The running error bound of every reference tensor
        (``parity.backends.torch.error_bound``): the standard deviation of a faithful float32
        computation's error, in units of the compute dtype's roundoff. Raises NoErrorRule for an
        operation without a rule."""
        return self.references.deviations(
            example.channels, data, gradients=gradients, skip=self.held_at_zero
        )

    # -- the port -----------------------------------------------------------------------
    def port(self, channels: int, x: np.ndarray) -> PortInstance:
        """The port built for this channel count (and, for a function or a port that
        accepts only the shape it was built for, this input shape)."""
        if channels in self._layer_ports and not self.one_instance_per_shape:
            return self._layer_ports[channels]
        shape_key = (channels, *x.shape)
        if shape_key in self._function_ports:
            return self._function_ports[shape_key]
        with self.framework.dtype_policy(PRECISIONS[self.precision]):
            instance = instantiate(self.pair.make_port, channels, x)
        if instance.from_function or self.one_instance_per_shape:
            self._function_ports[shape_key] = instance
        else:
            self._layer_ports[channels] = instance
        return instance

    def _port_input(self, data: ExampleData) -> np.ndarray:
        return to_data_format(data.x, self.pair.data_format).astype(np.float32)

    def port_for(self, example: Example, data: ExampleData | None = None) -> PortInstance:
        """The port built for ``example`` (``port``), on its input in the port's layout."""
        data = self.example_data(example) if data is None else data
        return self.port(example.channels, self._port_input(data))

    def bindings(self, instance: PortInstance, channels: int) -> list[Binding]:
        bindings = self.pair.bindings(instance, self.reference(channels))
        self.held_at_zero = getattr(bindings, "absent", ())
        self.declared_absent = getattr(bindings, "declared", ())
        self.untracked = tuple(
            (b.torch_key, instance.name_of(b.variable), b.port_shape)
            for b in getattr(bindings, "untracked", ())
        )
        fused = getattr(bindings, "fused", ())
        if fused:
            note = FUSED_NOTE.format(slices="; ".join(fused))
            if note not in self.notes:
                self.notes.append(note)
        return bindings

    @property
    def undeclared_absent(self) -> tuple[str, ...]:
        return tuple(k for k in self.held_at_zero if k not in self.declared_absent)

    def loaded_port(
        self, example: Example, data: ExampleData, bindings: list[Binding] | None = None
    ) -> LoadedPort:
        """The port built for ``example``, its input in its layout, and the example's
        weights loaded into it (what it lacks held at zero): what a forward pass, a
        vector-Jacobian product and a training step each start from. ``bindings``
        replaces the pair's, for the diagnosis' alternative weight assignments."""
        x = self._port_input(data)
        instance = self.port_for(example, data)
        bindings = bindings or self.bindings(instance, example.channels)
        ignore = (*self.pair.ignore, *self.held_at_zero)
        load_state_dict(instance.layer, data.state, bindings=bindings, ignore=ignore)
        parameters = set(self.references.parameter_names(example.channels))
        trained = [b for b in bindings if b.torch_key in parameters]
        return LoadedPort(x, instance, bindings, trained)

    def run_port(self, example, data, gradients, bindings: list[Binding] | None = None) -> Results:
        """The port's outputs (and gradients) in the reference's layout. ``bindings``
        replaces the pair's, for the diagnosis' alternative weight assignments."""
        fmt = self.pair.data_format
        x, instance, bindings, trained = self.loaded_port(example, data, bindings)
        try:
            if not gradients:
                outputs = self.framework.forward(instance.layer, x, self.mode)
                check_dtypes(outputs, self.precision)
                return named_outputs(outputs, lambda y: from_data_format(y, fmt))

            def cotangents(outputs):
                shapes = [
                    from_data_format(np.empty(y.shape, np.float32), fmt).shape for y in outputs
                ]
                return [to_data_format(c, fmt) for c in data.cotangents(shapes)]

            outputs, grad_x, grads = self.framework.vjp(
                instance.layer, x, cotangents, [b.variable for b in trained], self.mode
            )
        except PortError:
            raise
        except Exception as error:
            raise PortCrashed(
                f"the port raised {type(error).__name__} on input of shape {x.shape} "
                f"({fmt}): {describe_error(error)}",
                input_shape=x.shape,
            ) from error
        check_dtypes(outputs, self.precision)
        results = named_outputs(outputs, lambda y: from_data_format(y, fmt))
        results["grad[input]"] = from_data_format(grad_x, fmt)
        for binding, grad in zip(trained, grads, strict=True):
            results[f"grad[{binding.torch_key}]"] = binding.layout.to_torch(grad)
        return results

    # -- the check ----------------------------------------------------------------------
    def judge(self, truth, reference, port, deviations, rerun_truth, *, seed: int):
        """The policy's verdict (``parity.core.policy.judge``) on tensors in the reference's
        layout; ``rerun_truth()`` runs the float64 reference again, here under simulated
        rounding to the compute dtype, whenever the policy asks for its noise floor."""
        noisy = noisy_reruns(rerun_truth, self.policy.unit)
        return judge(truth, reference, port, self.policy, deviations, noisy, seed=seed)

    # -- the check ----------------------------------------------------------------------
    def check(self, example: Example, **options) -> ExampleReport:
        """Compare the port with the reference on one example (options: ``_check``).

        A port that fails on an instance built for another input shape is checked again on
        an instance built for this one, with the same weights loaded. When the fresh one
        does better (runs where the other crashed, passes where it failed), the port pins
        the shape of its first build (``input_spec``, static reshapes): it is said in a note,
        and from then on each shape gets its own instance. A crash inside TensorFlow on
        another Keras backend raises PortNeedsTensorFlow: the check cannot run here.
        """
        with tensorflow_named(self.framework):
            return self._check_reusing(example, **options)

    def _check_reusing(self, example: Example, **options) -> ExampleReport:
        reused = self._layer_ports.get(example.channels)
        shape = _port_shape(example.shape, self.pair.data_format)
        if self.one_instance_per_shape or reused is None or reused.built_for == shape:
            return self._check(example, **options)
        first = _attempt(self._check, example, **options)
        if _verdict(first) == "pass":
            return first
        self.one_instance_per_shape = True
        second = _attempt(self._check, example, **options)
        if _VERDICTS.index(_verdict(second)) <= _VERDICTS.index(_verdict(first)):
            self.one_instance_per_shape = False
            second = first
        elif SHAPE_BOUND_NOTE not in self.notes:
            self.notes.append(SHAPE_BOUND_NOTE)
        if isinstance(second, PortError):
            raise second
        return second

    def _check(
        self,
        example: Example,
        *,
        gradients: bool = True,
        keep: bool = False,
        forward_first: bool = False,
    ) -> ExampleReport:
        """Compare the port with the reference on one example. ``keep`` keeps the arrays.

        ``forward_first`` answers "does the full check fail?" more cheaply when it does:
        a failing forward pass is returned without computing gradients (shrinking a
        counterexample runs hundreds of failing examples).
        """
        gradients = gradients and self.pair.gradients
        if forward_first and gradients:
            forward = self._check(example, gradients=False, keep=keep)
            if not forward.passed:
                return forward
        data = self.example_data(example)
        self.bindings(self.port_for(example, data), example.channels)
        if self.held_at_zero:
            data = self.example_data(example)  # with what the port lacks held at zero
        truth = self.run_reference(example, data, "float64", gradients)
        reference = self.run_reference(example, data, self.reference_dtype, gradients)
        port = self.run_port(example, data, gradients)
        check_shapes(truth, port, self.pair.data_format)
        comparisons, floor = self.judge(
            truth,
            reference,
            port,
            lambda: self.reference_deviations(example, data, gradients),
            lambda: self.run_reference(example, data, "float64", gradients),
            seed=example.seed,
        )
        report = ExampleReport(self.pair.name, example, comparisons, precision=self.precision)
        if keep:
            report = replace(
                report, truth=truth, reference=reference, port=port, x=data.x, floor=floor
            )
        return report


FUSED_NOTE = (
    "parameters mapped onto slices of a fused weight's last axis, in the reference's order "
    "({slices}); a port that splits it in another order needs --weight-map with its slices, "
    'as in {{"query_conv.weight": "qkv/kernel[0:4]"}}'
)
"""Said whenever the weight map found a fused weight: the order is the reference's guess."""

SHAPE_BOUND_NOTE = (
    "the port did better on a fresh instance built for the example's shape than on one "
    "built for another: it pins the shape of its first build (input_spec or static shapes) "
    "or keeps state between calls; checked with one instance per shape, the same weights "
    "loaded into each"
)
"""Both causes are named: a port that counts its calls does better fresh too, whatever the
shape (tests.power.ports.CAMTemperatureAfterWarmUp)."""


def _port_shape(shape: tuple[int, ...], data_format: str) -> tuple[int, ...]:
    """An NCHW shape in the port's layout."""
    b, c, h, w = shape
    return (b, c, h, w) if data_format == "channels_first" else (b, h, w, c)


def _attempt(check, example, **options):
    """The report, or the PortError the port raised."""
    try:
        return check(example, **options)
    except PortError as error:
        return error


_VERDICTS = ("crash", "fail", "pass")  # worst to best


def _verdict(outcome) -> str:
    if isinstance(outcome, PortError):
        return "crash"
    return "pass" if outcome.passed else "fail"


def check_dtypes(outputs, precision: str) -> None:
    """Each output is a float at least as wide as the precision checked (bfloat16 counts
    as 16 bits); raises OutputDtypeMismatch naming the first that is not."""
    wanted = 4 if precision == "float32" else 2
    for index, output in enumerate(outputs):
        dtype = np.asarray(output).dtype
        floating = np.issubdtype(dtype, np.floating) or dtype.name == "bfloat16"
        if not floating or dtype.itemsize < wanted:
            name = "output" if len(outputs) == 1 else f"output[{index}]"
            raise OutputDtypeMismatch(name, dtype.name, precision)


def check_shapes(truth: Results, port: Results, data_format: str) -> None:
    """The port returned every tensor the reference did, each of the reference's shape."""
    missing = sorted(set(truth) - set(port))
    if missing:
        raise MissingOutputs(missing, sorted(port))
    for name, value in truth.items():
        if np.shape(port[name]) != np.shape(value):
            raise OutputShapeMismatch(name, np.shape(port[name]), np.shape(value), data_format)
