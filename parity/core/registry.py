"""The bundled module pairs: one file each in ``parity/pairs/``, found by looking.

Everything specific to a pair (its reference and port, parameter roles, bug hypotheses,
checkpoint sizing, bench shapes and FLOPs, what its attention costs in memory) lives in its
file, which exposes ``PAIR = PairDefinition(...)``. The engine, the diagnosis, checkpoint
conversion, the benchmark, the command and the property suite iterate this registry and
name no module: a new pair is a new file and nothing else.

Importing a pair file imports no framework: the command answers a usage error (an unknown
module, too few channels) in a fraction of a second. ``PairDefinition.build`` imports
PyTorch and Keras when the pair itself is needed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from parity.core.errors import UnknownPair, UnknownVariant
from parity.core.sizes import ModuleSize

if TYPE_CHECKING:
    from parity.core.hypotheses import Hypothesis

PACKAGE = "parity.pairs"


@dataclass(frozen=True)
class BenchVariant:
    """One version of a pair that ``parity bench`` times beside the others at the same
    shapes (the whole DANet on ResNet-50 and on ResNet-101): a row per shape, variant and
    implementation, the variant's name in each."""

    name: str
    flops: Callable[[tuple[int, int, int, int]], float]
    make_reference: Callable[[int], Any]  # channels -> torch module
    make_port: Callable[[int], Any]  # channels -> Keras layer, channels-last


@dataclass(frozen=True)
class LeanBench:
    """A memory-lean form of the pair's port that ``parity bench --lean`` times against the
    dense one at large sizes, and checks against the reference where the reference's float64
    attention fits (the pair's ``ModuleSize.attention_values`` says how large it is).

    make_port: ``chunk_size -> unbuilt channels-last Keras layer``.
    randomize: the weights of the check, as ``PairDefinition``'s pair draws them; soft
        attention rows at any size, so that the softmax is what is compared."""

    make_port: Callable[[int], Any]
    randomize: Callable[[Any, Any], dict]
    sides: tuple[int, ...] = (64, 128, 256)
    channels: int = 512
    chunk_size: int = 512


@dataclass(frozen=True)
class BenchSpec:
    """What ``parity bench`` times: DANet's working shapes (B, C, H, W), the forward pass'
    FLOPs at a shape, and the modules at the size a benchmark uses (which may differ from
    the property suite's: the head with Cityscapes' 19 classes). With ``variants``, those
    are timed instead, each with its own FLOPs and factories; ``lean``: what ``--lean`` times."""

    shapes: tuple[tuple[int, int, int, int], ...]
    flops: Callable[[tuple[int, int, int, int]], float] | None = None
    make_reference: Callable[[int], Any] | None = None  # channels -> torch module
    make_port: Callable[[int], Any] | None = None  # channels -> Keras layer, channels-last
    variants: tuple[BenchVariant, ...] = ()
    lean: LeanBench | None = None


@dataclass(frozen=True)
class CheckpointSpec:
    """How ``parity convert`` sizes the bundled Keras layer for a checkpoint.

    from_state: ``read(key, axis) -> int`` (a kernel's axis, the prefix applied) -> sizes.
    from_keras: ``kernel(part) -> HWIO shape`` (the first kernel under ``part`` in a
        ``.weights.h5``) -> sizes.
    make_layer: ``**sizes -> unbuilt Keras layer``; sizes hold ``channels``, its input's.
    describe: ``sizes -> 'impl_keras.DANetHead(19)'``, for the note on how to load the file.
    default: ``parity convert`` converts this pair when ``--module`` is not given.
    """

    from_state: Callable[[Callable[[str, int], int]], dict[str, int]]
    from_keras: Callable[[Callable[[str], tuple[int, ...]]], dict[str, int]]
    make_layer: Callable[..., Any]
    describe: Callable[[dict[str, int]], str] | None = None
    default: bool = False


@dataclass(frozen=True)
class PlantedBug:
    """A buggy port the pair ships for the suite's power: the property must reject it, and
    the diagnosis must name ``hypothesis`` (one of the pair's
    ``parity.backends.torch.variants.Variant`` s, told by its key) as the cause."""

    name: str
    make_port: Callable[[int], Any]
    hypothesis: Hypothesis


@dataclass(frozen=True)
class SizeVariant:
    """A pair at another size that ``parity check MODULE --variant NAME`` checks (the whole
    DANet at the original's width and depth): the property suite runs the pair at a size
    whose examples cost seconds, this one costs more per example, so it has its own count.

    ``build``: ``() -> ModulePair``, importing the frameworks; called once."""

    name: str
    build: Callable[[], Any]
    examples: int


@dataclass(frozen=True)
class PairDefinition:
    """One bundled pair as the registry holds it.

    Attributes:
        name: the name on the command line (``pam``).
        summary: a few words for help texts (``DANet's position attention``).
        order: where it comes in listings and in ``parity check`` with no module.
        size: its smallest channel count and its attention's memory (framework-free).
        build: ``() -> ModulePair``, importing the frameworks; called once.
        more_ports: ``() -> (ModulePair, ...)``: other bundled ports of the same
            reference the suite checks too (the memory-lean PAM).
        planted: ``() -> (PlantedBug, ...)``: buggy ports of its own for the power tests.
        bench: what ``parity bench`` times, or None.
        checkpoint: how ``parity convert`` sizes its layer, or None.
        examples: examples per property where one example costs seconds (the whole
            DANet): ``parity check``'s default for this pair, and the property suite runs
            the pair in a test of its own with this count; None: 100, the profile's.
        sizes: ``SizeVariant`` s that ``parity check --variant`` checks instead.
    """

    name: str
    summary: str
    order: int
    size: ModuleSize
    build: Callable[[], Any]
    more_ports: Callable[[], tuple] = tuple
    planted: Callable[[], tuple[PlantedBug, ...]] = tuple
    bench: BenchSpec | None = None
    checkpoint: CheckpointSpec | None = None
    examples: int | None = None
    sizes: tuple[SizeVariant, ...] = ()

    def size_variant(self, name: str) -> SizeVariant:
        for variant in self.sizes:
            if variant.name == name:
                return variant
        raise UnknownVariant(self.name, name, [v.name for v in self.sizes])

    @property
    def pair(self):
        """The ``parity.core.spec.ModulePair`` (built on first use)."""
        return _built(self.name)


@cache
def definitions() -> dict[str, PairDefinition]:
    """Every pair registered by a module of ``parity.pairs``, in their ``order``."""
    package = importlib.import_module(PACKAGE)
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{PACKAGE}.{info.name}")
        definition = getattr(module, "PAIR", None)
        if not isinstance(definition, PairDefinition):
            raise TypeError(
                f"{PACKAGE}.{info.name} registers no pair: it needs PAIR = PairDefinition(...)"
            )
        found.append(definition)
    names = [d.name for d in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"two files in {PACKAGE} register {duplicates}")
    return {d.name: d for d in sorted(found, key=lambda d: (d.order, d.name))}


def names() -> list[str]:
    return list(definitions())


def definition(name: str) -> PairDefinition:
    try:
        return definitions()[name]
    except KeyError:
        raise UnknownPair(name, sorted(definitions())) from None


@cache
def _built(name: str):
    return definition(name).build()


@cache
def variant_pair(name: str, variant: str):
    """The ``ModulePair`` of ``name`` at its size ``variant`` (imports the frameworks)."""
    return definition(name).size_variant(variant).build()


def pair(name: str):
    """The ``ModulePair`` registered as ``name`` (imports the frameworks)."""
    return definition(name).pair


def pairs() -> dict[str, Any]:
    """Every registered ``ModulePair``, by name."""
    return {name: d.pair for name, d in definitions().items()}
