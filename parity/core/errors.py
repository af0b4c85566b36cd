"""Every error the checks raise, under two roots: ``CannotCheck`` (exit status 2: the check
could not run) and ``PortError`` (exit status 1: the port is wrong).

The command, the pytest plugin and the driver catch the roots; the diagnosis and the report
dispatch on the subclasses, each carrying its data, never on a message. An error's message
is one line for the user. Some are also ``ValueError`` or ``KeyError`` (a bad value, an
unknown name), so that code catching those catches them too.
"""

from __future__ import annotations


class CannotCheck(Exception):
    """The check cannot run (exit status 2): bad arguments, a port that cannot be imported
    or built, an environment that cannot run it, an output that cannot be written.
    ``module``: the pair being checked when it was raised, where one was (the command's line
    starts with it)."""

    module: str | None = None


class PortLoadError(CannotCheck):
    """The port cannot be imported or built."""


class PortError(AssertionError):
    """The port is wrong (exit status 1): a tensor off the policy (``ParityFailure``), a
    crash, an output of another shape, weights it cannot hold. An AssertionError, so that
    Hypothesis shrinks the example it happened on."""

    def __reduce__(self):
        # Rebuilt without calling __init__ (whose arguments are the fields, not the
        # message), so that copying or pickling keeps the type and its fields.
        return _restored, (type(self), self.args), self.__dict__


def _restored(cls, args):
    error = cls.__new__(cls)
    error.args = args
    return error


class PortCrashed(PortError):
    """The port raised on an input: a shape to find, unlike weights it cannot hold.
    ``input_shape``: the input it raised on, in the port's layout."""

    def __init__(self, message: str, input_shape: tuple[int, ...]):
        super().__init__(message)
        self.input_shape = tuple(int(n) for n in input_shape)


class OutputShapeMismatch(PortError):
    """The port ran, but a tensor it returned has another shape than the reference's.
    ``port_shape`` and ``reference_shape`` are both in the reference's layout."""

    def __init__(
        self,
        tensor: str,
        port_shape: tuple[int, ...],
        reference_shape: tuple[int, ...],
        data_format: str,
    ):
        self.tensor = tensor
        self.port_shape, self.reference_shape = tuple(port_shape), tuple(reference_shape)
        super().__init__(
            f"{tensor}: the port's shape {self.port_shape} (in the reference's NCHW layout, "
            f"read as {data_format}) differs from the reference's {self.reference_shape}"
        )


class OutputDtypeMismatch(PortError):
    """The port returned a tensor of a type the check cannot judge at its precision: not a
    float (``int32``), or narrower than the precision checked (``float16`` where float32 is
    checked). ``tensor``, ``dtype`` (the port's) and ``precision`` name it."""

    def __init__(self, tensor: str, dtype: str, precision: str):
        self.tensor, self.dtype, self.precision = tensor, dtype, precision
        kind = "not a floating-point type" if "float" not in dtype else f"narrower than {precision}"
        super().__init__(
            f"{tensor}: the port returns {dtype}, {kind}, where the reference computes "
            f"{precision} (a cast, a dtype policy or an integer op inside the port?)"
        )


class MissingOutputs(PortError):
    """The port returned fewer tensors than the reference: ``missing`` names those it did
    not produce, ``produced`` those it did."""

    def __init__(self, missing: list[str], produced: list[str]):
        self.missing, self.produced = list(missing), list(produced)
        super().__init__(f"the port produced no {', '.join(missing)} (it has {produced})")


class WeightsNotHeld(PortError):
    """The port cannot hold the reference's weights: no input shape is involved, so there
    is no example to shrink and the message is the whole diagnosis."""


class WeightsCreatedPerCall(WeightsNotHeld):
    """The port creates new weights each time it is called (layers made in ``call()``):
    ``created`` describes them (``'q/kernel (1, 1, 16, 2)'``)."""

    def __init__(self, created: list[str]):
        self.created = list(created)
        shown = ", ".join(created[:2]) + (", ..." if len(created) > 2 else "")
        super().__init__(
            f"weights created anew on every call: the port makes {len(created)} new weights "
            f"each time it is called ({shown}), so two calls on the same input differ and no "
            "weights can be loaded into it. Create its layers in build() or __init__, not in "
            "call()."
        )


class UntrackedParameter(WeightsNotHeld):
    """A parameter the port keeps in a variable Keras does not track (a bare
    ``tf.Variable``): ``untracked`` describes them, ``unmapped`` is the mapping's own
    refusal."""

    def __init__(self, untracked: list[str], unmapped: UnmappedWeights):
        self.untracked, self.unmapped = list(untracked), unmapped
        super().__init__(
            f"a parameter that is not a tracked weight: the port keeps "
            f"{', '.join(untracked)} in a variable Keras does not track (a bare "
            "tf.Variable), so it can be neither loaded nor trained; create it with "
            f"add_weight() in build(). ({unmapped})"
        )


class FrozenParameter(WeightsNotHeld):
    """A trainable parameter of the reference held in a non-trainable weight: ``frozen``
    pairs each parameter with the port weight that holds it."""

    def __init__(self, frozen: list[tuple[str, str]]):
        self.frozen = list(frozen)
        super().__init__(
            "a parameter that is not trained: the port holds "
            + ", ".join(f"{key} in {weight}" for key, weight in frozen)
            + " as a non-trainable weight, so training would never move it"
        )


class ModuleNotDetected(PortError):
    """No registered pair's parameters map onto the port's weights: ``weights`` describes
    the port's trainable weights, ``modules`` the pairs tried."""

    def __init__(self, weights: list[str], modules: list[str]):
        self.weights, self.modules = list(weights), list(modules)
        super().__init__(
            f"cannot tell which module the port implements: its weights ({', '.join(weights)}) "
            f"fit none of {', '.join(modules)}; name it: --port {modules[0]}=MODULE:FACTORY"
        )


class PortNeedsTensorFlow(PortLoadError):
    """The port calls TensorFlow while Keras runs on another backend, whose tensors
    TensorFlow's functions cannot take (JAX's tracers, PyTorch tensors that need gradients):
    it cannot run here, whatever its math, and the error TensorFlow raises says nothing of
    it. ``call``: the port's line that called TensorFlow, ``backend``: Keras' backend."""

    def __init__(self, call: str, backend: str):
        self.call, self.backend = call, backend
        super().__init__(
            f"the port calls TensorFlow ({call}), whose functions cannot take the {backend} "
            "backend's tensors: check it with KERAS_BACKEND=tensorflow, or write it with "
            "keras.ops"
        )


class ParityFailure(PortError):
    """The port's error on some tensor exceeds what the tolerance policy allows: ``report``
    (an ``ExampleReport``) says by how much; with ``pair`` (a ``ModulePair``), a note gives
    the command that replays it (a training step with the optimizer ``train``)."""

    def __init__(self, report, pair=None, train: str | None = None):
        self.report = report
        super().__init__(
            f"{report.pair}: the port differs from the reference on {report.example}\n"
            + report.describe_failures()
        )
        if pair is not None:
            self.add_note(f"Replay: {pair.replay(report.example, train, report.precision)}")


# -- the check cannot run ----------------------------------------------------------------------


class UnmappedWeights(CannotCheck):
    """The reference's parameters do not map onto the port's weights, so nothing can be
    compared (exit status 2: whether the port is wrong is not known): ``missing`` are
    reference parameters with no counterpart, ``left_over`` port weights nothing holds. The
    message ends with the weight map to fill in."""

    def __init__(self, message: str, missing: list[str], left_over: list[str]):
        super().__init__(message)
        self.missing, self.left_over = list(missing), list(left_over)


class UsageError(CannotCheck):
    """Arguments the command cannot run with."""


class SelectionError(CannotCheck, ValueError):
    """Arguments that select no pair (or more than the option allows)."""


class UnknownPair(CannotCheck, KeyError):
    """A module name no file in ``parity/pairs/`` registers."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name, self.known = name, known

    def __str__(self) -> str:
        return f"unknown module {self.name!r}; expected one of {self.known}"


class UnknownVariant(CannotCheck, KeyError):
    """A size variant the pair does not have."""

    def __init__(self, pair: str, name: str, known: list[str]):
        super().__init__(name)
        self.pair, self.name, self.known = pair, name, known

    def __str__(self) -> str:
        if not self.known:
            return f"{self.pair} has no variants; --variant {self.name} does not apply"
        return f"{self.pair} has no variant {self.name!r}; expected one of {self.known}"


class TooLarge(CannotCheck, ValueError):
    """A shape whose attention maps would not fit in this machine's memory."""


class WeightMapError(CannotCheck, ValueError):
    """An explicit weight map that names keys or weights that do not exist."""


class StateDictMismatchError(CannotCheck, ValueError):
    """A state_dict that does not fit a layer: missing, unexpected or mis-shaped entries."""


class CheckpointError(CannotCheck):
    """A checkpoint that cannot be converted."""


class NotWritable(CannotCheck):
    """A path the command cannot write."""


class Keras2Needed(CannotCheck):
    """A port that failed under Keras 3 the way Keras 2 code fails (``sign``: what it
    raised); the command runs it again under tf.keras 2, which must be chosen before
    TensorFlow is imported."""

    def __init__(self, sign: str):
        self.sign = sign
        super().__init__(
            f"the port fails under Keras 3 the way Keras 2 code does ({sign}): check it under "
            "tf.keras 2 (parity check --keras 2, or TF_USE_LEGACY_KERAS=1 before TensorFlow "
            "is imported)"
        )


class UnknownFramework(CannotCheck):
    """A framework name no implementation of the protocol registers."""


class NoErrorRule(CannotCheck, NotImplementedError):
    """An operation the running error bound has no rule (nor decomposition) for: the policy
    then does without the bound (``policy.judge``)."""

    def __init__(self, op: str):
        super().__init__(f"no running-error rule for {op}")
        self.op = op
