"""Which weight of a port holds which parameter of the reference.

In this order: an explicit map (JSON: ``{"query_conv.weight": "q/kernel", ...}``); then
names, where they say it (the words of the pair's roles, for DANet query/q, key/k, value/v,
gamma/alpha/beta/scale; kernel/weight, bias; case and separators ignored); then the order
the port created its weights in, among weights whose shapes fit. The layout of each pair
(conv kernel, dense kernel, vector, scalar) follows from the two shapes. Port weights are
named by the attribute paths their author wrote (``q/kernel`` for ``self.q = Conv2D(...)``),
the same in every instance.

A reference bias the port lacks (``use_bias=False``) does not stop the check: it is held at
zero in the reference and reported; the map declares such an absence with ``null``
(``{"query_conv.bias": null}``). Whatever else stays unmapped is an error that lists both
sides, and says in words when the port is another architecture.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from parity.core.errors import UnmappedWeights, WeightMapError
from parity.core.layout import Binding, infer_layout, sliced_layout, variable_path

Roles = tuple[tuple[str, frozenset[str]], ...]
"""``((role, words), ...)``: the words weight names use for each parameter role of a pair
(``("query", frozenset({"query", "q"}))``); a pair supplies its own (``ModulePair.roles``)."""

_KINDS = {"weight": {"weight", "kernel", "w"}, "bias": {"bias", "b"}}
_SLICE = re.compile(r"^(?P<path>.+)\[(?P<start>\d+):(?P<stop>\d+)\]$")
"""A weight-map entry held in a slice of a fused weight's last axis: ``qkv/kernel[0:4]``."""


def _path_and_slice(entry: str) -> tuple[str, tuple[int, int] | None]:
    found = _SLICE.match(entry)
    if found is None:
        return entry, None
    return found["path"], (int(found["start"]), int(found["stop"]))


def _tokens(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def _role_and_kind(name: str, roles: Roles = ()) -> tuple[str | None, str | None]:
    tokens = _tokens(name)
    if not tokens:
        return None, None
    kind = next((k for k, words in _KINDS.items() if tokens[-1] in words), None)
    owner = tokens[:-1] if kind else tokens
    joined = "".join(owner)
    roles = {
        role
        for role, words in roles
        if any(t in words for t in owner) or any(len(w) > 1 and w in joined for w in words)
    }
    return (roles.pop() if len(roles) == 1 else None), kind


def name_role(name: str, roles: Roles = ()) -> tuple[str | None, str | None]:
    """('query', 'weight') for a port weight 'q/kernel'; (None, 'bias') for 'conv2d/bias'."""
    return _role_and_kind(name, roles)


def reference_role(key: str, roles: Roles = ()) -> tuple[str | None, str | None]:
    """('query', 'weight') for 'query_conv.weight'; ('gamma', None) for 'gamma'."""
    return _role_and_kind(key, roles)


def read_weight_map(path: str | Path) -> dict[str, str | None]:
    """Reference parameter -> port weight path; ``null`` declares a parameter the port does
    not have (a bias under ``use_bias=False``)."""
    try:
        mapping = json.loads(Path(path).read_text())
    except OSError as error:
        raise WeightMapError(f"cannot read --weight-map {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise WeightMapError(f"--weight-map {path} is not valid JSON: {error}") from error
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in mapping.items()
    ):
        raise WeightMapError(
            f"--weight-map {path} must be a JSON object of reference parameter -> port weight "
            'path (null: the port has none), e.g. {"query_conv.weight": "q/kernel", '
            '"query_conv.bias": null}'
        )
    return mapping


class Bindings(list):
    """The bindings, and the reference parameters the port has no counterpart for: held at
    zero in the reference (``absent``), of which ``declared`` the user said so; ``untracked``:
    the bindings whose weight the port's framework does not track (a bare ``tf.Variable``),
    loaded and differentiated all the same, and a failure of the port whatever the rest;
    ``fused``: the weight-map entries found as slices of a fused weight, said in a note."""

    def __init__(self, bindings=(), absent=(), declared=(), untracked=(), fused=()):
        super().__init__(bindings)
        self.absent = tuple(absent)
        self.declared = tuple(declared)
        self.untracked = tuple(untracked)
        self.fused = tuple(fused)

    @property
    def undeclared(self) -> tuple[str, ...]:
        return tuple(k for k in self.absent if k not in self.declared)


def _port_name(weight) -> str:
    return variable_path(weight)


def map_weights(
    reference: Mapping[str, tuple[int, ...]],
    port_weights: list,
    explicit: Mapping[str, str | None] | None = None,
    name_of=None,
    declared_absent: tuple[str, ...] = (),
    roles: Roles = (),
) -> Bindings:
    """Bind every reference parameter to one port weight, or raise UnmappedWeights listing
    both sides.

    ``reference`` maps parameter names to shapes (reference order); ``port_weights`` are
    Keras variables in creation order; ``name_of(weight)`` is the name matched against the
    reference's (default: the weight's path). An explicit map names those paths (or full
    ones), or ``None`` for a parameter the port does not have. Biases the port lacks are
    returned as ``absent`` rather than refused. ``roles``: the pair's words for its
    parameters' roles (without them, names decide nothing).
    """
    name_of = name_of or _port_name
    by_path = {_port_name(w): w for w in port_weights}
    by_path.update({name_of(w): w for w in port_weights})
    explicit = dict(explicit or {})
    declared = {k for k, v in explicit.items() if v is None}
    declared |= {k for k in reference if any(fnmatchcase(k, p) for p in declared_absent)}
    matching_nothing = [p for p in declared_absent if not any(fnmatchcase(k, p) for k in reference)]
    if matching_nothing:
        raise WeightMapError(
            f"--absent {matching_nothing[0]} names no parameter of the reference (its "
            f"parameters: {', '.join(reference)})"
        )
    explicit = {k: v for k, v in explicit.items() if v is not None}
    unknown_keys = sorted((set(explicit) | {k for k in declared}) - set(reference))
    unknown_paths = sorted({_path_and_slice(v)[0] for v in explicit.values()} - set(by_path))
    if unknown_keys or unknown_paths:
        known_paths = [name_of(w) for w in port_weights]
        raise WeightMapError(
            "the weight map names "
            + "; ".join(
                part
                for part in (
                    f"reference parameters that do not exist: {unknown_keys} "
                    f"(known: {list(reference)})"
                    if unknown_keys
                    else "",
                    f"port weights that do not exist: {unknown_paths} (known: {known_paths})"
                    if unknown_paths
                    else "",
                )
                if part
            )
        )
    bindings: dict[str, Binding] = {}
    taken: set[int] = set()
    problems = []

    def bind(key, weight, part=None):
        shape = tuple(weight.shape)
        if part is None:
            layout = infer_layout(reference[key], shape)
        else:
            layout = sliced_layout(reference[key], shape, *part)
        if layout is None:
            return False
        bindings[key] = Binding(key, weight, layout)
        taken.add(id(weight))
        return True

    for key, entry in explicit.items():
        path, part = _path_and_slice(entry)
        if not bind(key, by_path[path], part):
            problems.append(
                f"weight map: {key!r} {tuple(reference[key])} cannot be held by "
                f"{entry!r} {tuple(by_path[path].shape)}"
            )
    wanted = [k for k in reference if k not in declared]
    for key in wanted:
        if key in bindings:
            continue
        role, kind = reference_role(key, roles)
        candidates = [
            w
            for w in port_weights
            if id(w) not in taken
            and role is not None
            and _role_and_kind(name_of(w), roles) == (role, kind)
        ]
        if len(candidates) == 1:
            bind(key, candidates[0])

    # One-element parameters (gamma) last, so that they cannot take a one-element bias, and
    # among them first the biases of modules already bound, each to the weight beside its
    # module's (a 1-channel query's bias beside the query's kernel, not gamma's variable); a
    # convolution's weight or bias never goes to a normalisation layer's own weights; a
    # parameter goes to a trainable weight and a running statistic to a frozen one first
    # (a port that creates its layers in another order than the reference's).
    def bind_in_order(key):
        convolution = reference_role(key, roles)[1] is not None and not (
            _normalisation_parameter(key, reference)
        )
        beside = _beside(key, bindings, name_of)
        statistic = key.rsplit(".", 1)[-1] in STATISTICS

        def preference(weight):
            return (bool(weight.trainable) == statistic, _parent(name_of(weight)) not in beside)

        for weight in sorted(port_weights, key=preference):
            if convolution and _normalisation_weight(weight, name_of):
                continue
            if id(weight) not in taken and bind(key, weight):
                return

    one_element = [k for k in wanted if int(np.prod(reference[k])) == 1]
    for key in [k for k in wanted if k not in one_element and k not in bindings]:
        bind_in_order(key)
    for key in sorted(one_element, key=lambda k: not _beside(k, bindings, name_of)):
        if key not in bindings:
            bind_in_order(key)
    missing = [k for k in wanted if k not in bindings]
    extra = [w for w in port_weights if id(w) not in taken and w.trainable]
    fused: dict[str, list[str]] = {}  # fused weight -> the parameters in its slices
    if missing and extra and not problems:
        for key, weight, part in _fused(reference, missing, extra, roles):
            bind(key, weight, part)
            fused.setdefault(name_of(weight), []).append(key)
        missing = [k for k in wanted if k not in bindings]
        extra = [w for w in port_weights if id(w) not in taken and w.trainable]
    biases = [k for k in missing if reference_role(k)[1] == "bias"]
    if not problems and not extra and missing == biases:
        bound = [bindings[k] for k in wanted if k in bindings]
        return Bindings(
            bound,
            [k for k in reference if k in declared or k in missing],
            [k for k in reference if k in declared],
            fused=[f"{', '.join(keys)} in {weight}" for weight, keys in fused.items()],
        )
    lines = [*problems]
    if missing:
        lines.append(
            "reference parameters with no counterpart: "
            + ", ".join(f"{k} {tuple(reference[k])}" for k in missing)
        )
    elif extra:
        lines.append(
            "port weights no reference parameter maps to: "
            + ", ".join(f"{name_of(w)} {tuple(w.shape)}" for w in extra)
        )
    message = "cannot map the reference's weights onto the port: " + "; ".join(lines)
    structure = describe_structure(reference, missing, extra, name_of, roles)
    message = f"{structure} ({message})" if structure else message
    if missing:
        message += (
            ". If it is a port of this module, name its weights: --weight-map FILE.json with "
            + fill_in(missing, extra, name_of)
        )
    raise UnmappedWeights(
        message,
        missing=missing,
        left_over=[name_of(w) for w in extra],
    )


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
"""A normalisation module's buffers, as PyTorch names them: held by frozen weights."""


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _beside(key: str, bindings: Mapping[str, Binding], name_of) -> set[str]:
    """The port layers holding the other parameters of ``key``'s module already bound."""
    module = key.rsplit(".", 1)[0] if "." in key else None
    return {
        _parent(name_of(b.variable))
        for k, b in bindings.items()
        if module is not None and k.rsplit(".", 1)[0] == module
    }


def _fused(reference, missing, extra, roles: Roles):
    """Parameters of one kind (weights, or biases) whose outputs, in the reference's order,
    add up to the last axis of one port weight: a fused convolution split afterwards
    (query, key and value from one ``qkv`` convolution). Yields (key, weight, (start,
    stop)) where every such parameter fits its slice; nothing where any does not."""
    for kind in ("weight", "bias"):
        keys = [k for k in missing if reference_role(k, roles)[1] == kind]
        if len(keys) < 2:
            continue
        outputs = [int(reference[k][0]) for k in keys]
        for weight in extra:
            shape = tuple(weight.shape)
            if not shape or shape[-1] != sum(outputs):
                continue
            starts = np.cumsum([0, *outputs])
            parts = [(int(a), int(b)) for a, b in itertools.pairwise(starts)]
            if all(
                sliced_layout(reference[k], shape, *part) is not None
                for k, part in zip(keys, parts, strict=True)
            ):
                yield from ((k, weight, part) for k, part in zip(keys, parts, strict=True))
                break


_NORMALISATION = {"gamma", "beta", "mean", "variance"}


def _normalisation_weight(weight, name_of) -> bool:
    """A BatchNorm's scale, offset or statistics (``bn/gamma``, ``moving_variance``): a
    vector of more than one element with such a name."""
    tokens = _tokens(name_of(weight))
    shape = tuple(weight.shape)
    return bool(tokens) and tokens[-1] in _NORMALISATION and len(shape) == 1 and int(shape[0]) > 1


def _normalisation_parameter(key: str, reference) -> bool:
    """A reference parameter of a normalisation layer (its module keeps running
    statistics): the weights and biases a BatchNorm's own weights may hold."""
    module = key.rsplit(".", 1)[0]
    return f"{module}.running_mean" in reference or f"{module}.running_var" in reference


def fill_in(missing, candidates, name_of) -> str:
    """The weight map to fill in, on one line: each parameter with no counterpart, and the
    port's weights that could hold one."""
    blank = json.dumps({key: "?" for key in missing})
    offered = ", ".join(f"{name_of(w)} {tuple(w.shape)}" for w in candidates) or "none left"
    return f"{blank} (its weights not yet mapped: {offered}; null: the port has none)"


def describe_structure(reference, missing, extra, name_of, roles: Roles = ()) -> str:
    """In words, when the unmapped weights show another architecture: convolutions whose
    output channels differ from the reference's, or BatchNorm layers it does not have."""
    parts = []
    by_role = {}
    for weight in extra:
        role, kind = _role_and_kind(name_of(weight), roles)
        if kind == "weight" and len(weight.shape) in (2, 4):
            by_role.setdefault(role, weight)
    for key in missing:
        role, kind = reference_role(key, roles)
        weight = by_role.get(role)
        if kind != "weight" or weight is None or len(reference[key]) != 4:
            continue
        out_ref, in_ref = reference[key][:2]
        out_port = int(weight.shape[-1])
        if out_port != out_ref:
            parts.append(
                f"its {role} is a {in_ref} -> {out_port} convolution ({name_of(weight)}) where "
                f"the reference's {key.rsplit('.', 1)[0]} maps {in_ref} -> {out_ref} channels"
            )
    norms = sorted(
        {name_of(w).rsplit("/", 1)[0] for w in extra if _normalisation_weight(w, name_of)}
    )
    if norms:
        parts.append(
            f"it has normalisation layers the reference does not ({', '.join(norms)}: BatchNorm, "
            "usually with an activation after it)"
        )
    if not parts:
        return ""
    return "another architecture, not a port of this module: " + "; ".join(parts)
