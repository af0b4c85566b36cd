"""A module pair: the reference, the port, and what it takes to check one against the other.

The parity engine knows nothing about PAM or CAM: it runs a ``ModulePair``. The bundled
pairs live in ``parity/pairs/``, a file each, found by ``parity.core.registry``; a planted buggy
port, or a user's own, is the same pair with another ``make_port``
(``dataclasses.replace(pair, make_port=MyPort)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

from parity.core.errors import FrozenParameter, UnmappedWeights, UntrackedParameter, WeightMapError
from parity.core.hypotheses import BATCH_NORM_STATISTICS, BufferSwap, RoleSwap
from parity.core.layout import Binding, bindings_for
from parity.core.replay import BUNDLED, Origin, replay_for
from parity.core.strategies import Example, examples
from parity.core.weight_map import Bindings, Roles, map_weights

GAMMA_MAGNITUDE = (0.25, 4.0)
"""Scalar parameters (``gamma``) are drawn this far from zero, with a random sign: at
PyTorch's init (0) the attention path is invisible and its gradients vanish."""


def random_parameters(module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A state_dict for ``module`` with every parameter redrawn, as float32 values.

    Rank >= 2 (kernels): uniform in +-1/sqrt(fan_in), PyTorch's default bound. Biases: the
    same bound as their layer's kernel. One-element parameters: log-uniform magnitude in
    GAMMA_MAGNITUDE, random sign. BatchNorm's running mean and variance: uniform in
    +-0.5 and [0.5, 2] (at their init, 0 and 1, a swap of the two or a wrong epsilon can
    hide); other buffers are kept. Values are rounded to float32 so that the float32 and
    float64 runs see exactly the same numbers.
    """
    state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
    parameters = dict(module.named_parameters())
    for name, param in parameters.items():
        shape = tuple(param.shape)
        if param.numel() == 1:
            low, high = np.log(GAMMA_MAGNITUDE)
            value = rng.choice([-1.0, 1.0]) * np.exp(rng.uniform(low, high, size=shape))
        else:
            sibling = parameters.get(name.rsplit(".", 1)[0] + ".weight", param)
            fan_in = int(np.prod(sibling.shape[1:])) if sibling.dim() >= 2 else 1
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, size=shape)
        state[name] = value.astype(np.float32)
    for name in state:
        if name.endswith("running_mean"):
            state[name] = rng.uniform(-0.5, 0.5, size=state[name].shape).astype(np.float32)
        elif name.endswith("running_var"):
            state[name] = rng.uniform(0.5, 2.0, size=state[name].shape).astype(np.float32)
    return state


@dataclass(frozen=True)
class ModulePair:
    """A PyTorch reference module and the Keras port that claims to compute the same.

    Attributes:
        name: short name used on the command line (``pam``).
        make_reference: ``channels -> torch.nn.Module``.
        make_port: ``channels -> keras.layers.Layer`` (built on first call).
        data_format: the layout the port reads and writes.
        bindings: ``(port instance, reference module) -> [Binding]``: which Keras variable
            holds which reference parameter, through which layout (the parameter map).
        min_channels, max_channels: the channel counts the default strategy draws.
        randomize: ``(reference module, numpy Generator) -> state_dict`` of random weights.
        strategy: a Hypothesis strategy of ``Example`` (what inputs); default from the
            channel range.
        gradients: compare gradients too (what to compare).
        ignore: state_dict keys of the reference that the port does not hold on purpose.
        residual: the module returns ``x + f(x)`` (the diagnosis uses it).
        variants: ``parity.backends.torch.variants.Variant`` s: the reference with one known bug
        each,
            module-specific hypotheses for the diagnosis (``parity.core.hypotheses``).
        roles: ``((role, words), ...)``: the words a port's weight names use for each
            parameter role (``("query", frozenset({"query", "q"}))``), for mapping weights
            by name and naming them in diagnoses; without roles, weights map by order and
            shape.
        role_swaps: ``parity.core.hypotheses.RoleSwap`` s the diagnosis tries (query and key
            exchanged).
        buffer_swaps: ``parity.core.hypotheses.BufferSwap`` s the diagnosis tries (default:
            BatchNorm's running mean and variance).
        origin: what selects this port and size on the command line
            (``parity.core.replay.Origin``), for replay commands.
    """

    name: str
    make_reference: Callable[[int], Any]
    make_port: Callable[[int], Any]
    data_format: str = "channels_last"
    bindings: Callable[[Any, Any], list[Binding]] = lambda port, reference: bindings_for(port.layer)
    min_channels: int = 1
    max_channels: int = 48
    randomize: Callable[[Any, np.random.Generator], dict[str, np.ndarray]] = random_parameters
    strategy: Any = None
    gradients: bool = True
    ignore: tuple[str, ...] = ()
    residual: bool = False
    variants: tuple = ()
    roles: Roles = ()
    role_swaps: tuple[RoleSwap, ...] = ()
    buffer_swaps: tuple[BufferSwap, ...] = (BATCH_NORM_STATISTICS,)
    origin: Origin = BUNDLED

    def __repr__(self) -> str:  # short, for pytest's and Hypothesis' failure reports
        flags = f", {self.origin.flags()!r}" if self.origin else ""
        return f"ModulePair({self.name!r}{flags})"

    def _repr_pretty_(self, printer, cycle) -> None:  # Hypothesis prints dataclasses field by field
        printer.text(repr(self))

    def replay(self, example, train: str | None = None, precision: str = "float32") -> str:
        """The command (or Python call) that reruns ``example`` of this pair
        (``parity.core.replay.replay_for``)."""
        return replay_for(self, example, train, precision)

    def richer_example(
        self, seed: int = 0, scale: float = 1.0, height: int = 3, width: int = 5
    ) -> Example:
        """An example where most bugs show: batch 2, H != W, 16 channels (or as near as the
        pair allows); the port is first built on it, the diagnosis tries its hypotheses on
        it, the report's pictures are drawn at it (larger sides)."""
        channels = min(max(16, self.min_channels), self.max_channels)
        return Example(2, channels, height, width, scale, seed)

    def examples(self):
        """The Hypothesis strategy of this pair's examples."""
        if self.strategy is not None:
            return self.strategy
        return examples(min_channels=self.min_channels, max_channels=self.max_channels)


def channels_first(pair: ModulePair) -> ModulePair:
    """The same pair with the bundled port run on NCHW inputs."""

    def make_port(channels):
        layer = pair.make_port(channels)
        return type(layer).from_config({**layer.get_config(), "data_format": "channels_first"})

    return replace(
        pair, name=f"{pair.name}-channels-first", make_port=make_port, data_format="channels_first"
    )


def mapped_bindings(
    weight_map: dict[str, str | None] | None = None,
    ignore: tuple[str, ...] = (),
    absent: tuple[str, ...] = (),
    roles: Roles = (),
):
    """Bindings found by ``parity.core.weight_map``: names (the words of ``roles``), creation
    order, or ``weight_map``; ``absent`` (globs) declares reference parameters the port
    does not have."""

    def bindings(port, reference):
        shapes = {
            key: tuple(value.shape)
            for key, value in reference.state_dict().items()
            if not any(fnmatchcase(key, pattern) for pattern in ignore)
        }
        explicit = {**declared_weight_map(port), **(weight_map or {})}
        if port.bare:  # the untracked variables may hold parameters: candidates too
            mapped = _with_untracked(shapes, port, explicit, absent, roles)
        else:
            mapped = map_weights(
                shapes,
                port.weights,
                explicit,
                name_of=port.name_of,
                declared_absent=absent,
                roles=roles,
            )
        trainable = set(dict(reference.named_parameters()))
        frozen = [b for b in mapped if b.torch_key in trainable and not b.variable.trainable]
        if frozen:
            raise FrozenParameter([(b.torch_key, port.name_of(b.variable)) for b in frozen])
        return mapped

    return bindings


def declared_weight_map(port) -> dict[str, str]:
    """The map a port layer declares itself (``parity_weight_map``: reference key -> one of
    its weights), as weight-map paths: what a converter's output knows and its names do
    not say. A map given by the user wins."""
    declared = getattr(port.layer, "parity_weight_map", None) or {}
    return {key: port.name_of(weight) for key, weight in declared.items()}


def _with_untracked(shapes, port, weight_map, absent, roles) -> Bindings:
    """The bindings with the port's untracked variables among its weights: a parameter held
    in a bare tf.Variable is still loaded and judged (its gradient too), so that the rest of
    the port is checked; the variables are named in ``untracked``. Where the parameters map
    only without them, the variables hold none (state of the port's own) and are left out;
    UntrackedParameter where they map neither way."""

    def mapped(weights):
        return map_weights(
            shapes, weights, weight_map, name_of=port.name_of, declared_absent=absent, roles=roles
        )

    try:
        bindings = mapped(port.with_bare or [*port.weights, *port.bare])
    except UnmappedWeights:
        try:
            return mapped(port.weights)
        except UnmappedWeights as error:
            raise UntrackedParameter(port.untracked, error) from error
    bare = {id(v) for v in port.bare}
    untracked = [b for b in bindings if id(b.variable) in bare]
    return Bindings(bindings, bindings.absent, bindings.declared, untracked, bindings.fused)


def _check_one_parameter_per_weight(weight_map: dict[str, str]) -> None:
    """Two parameters sent to one weight would load one over the other and end in an
    "unexplained" failure; refuse the map instead."""
    parameter_for: dict[str, str] = {}
    for parameter, weight in weight_map.items():
        if weight is None:  # declared absent: the port has no such weight
            continue
        if weight in parameter_for:
            raise WeightMapError(
                f"the weight map sends both {parameter_for[weight]} and {parameter} to the "
                f"port weight {weight!r}; each weight holds one parameter"
            )
        parameter_for[weight] = parameter


def with_port(
    pair: ModulePair,
    factory: Callable[[int], Any],
    *,
    weight_map: dict[str, str | None] | None = None,
    data_format: str | None = None,
    origin: Origin = BUNDLED,
    absent: tuple[str, ...] = (),
) -> ModulePair:
    """``pair`` checked against another port, its weights mapped by ``parity.core.weight_map``."""
    _check_one_parameter_per_weight(weight_map or {})
    return replace(
        pair,
        make_port=factory,
        bindings=mapped_bindings(weight_map, pair.ignore, absent, pair.roles),
        data_format=data_format or pair.data_format,
        origin=origin,
    )
