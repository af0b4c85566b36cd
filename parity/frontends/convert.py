"""Checkpoint conversion: PyTorch (``.pth``/``.pt``/``.safetensors``) into Keras weights
(``.weights.h5``), and Keras weights back into ``.safetensors``.

Checkpoints are untrusted input: ``.pth`` files are read with ``torch.load(...,
weights_only=True)``, which refuses a pickle that carries code, and ``.safetensors`` holds
tensors only. Conversion is strict (missing, unexpected or mis-shaped keys are refused
unless ignored by name) and atomic: the output appears complete or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np

from parity.backends.protocol import port_framework
from parity.backends.torch.checkpoints import TORCH_SUFFIXES, read_torch_checkpoint
from parity.backends.weights import export_state_dict, load_state_dict
from parity.core import registry
from parity.core.errors import CheckpointError, StateDictMismatchError
from parity.core.layout import bindings_for

KERAS_SUFFIX = ".weights.h5"
ALWAYS_IGNORED = ("*num_batches_tracked",)  # BatchNorm's counter: no Keras counterpart


@dataclass
class Conversion:
    """What was converted: (reference key, Keras path, PyTorch shape, Keras shape) rows."""

    rows: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def text(self, source: str, target: str) -> str:
        lines = [f"converted {len(self.rows)} tensors from {source} into {target}:"]
        lines += [
            f"  {key} {torch_shape} -> {path} {keras_shape}"
            for key, path, torch_shape, keras_shape in self.rows
        ]
        if self.ignored:
            lines.append(f"ignored on purpose: {', '.join(self.ignored)}")
        lines += self.notes
        return "\n".join(lines)


def _rows(bindings, state, prefix) -> list[tuple[str, str, tuple, tuple]]:
    return [
        (
            prefix + b.torch_key,
            b.port_path.split("/", 1)[-1],
            tuple(state[prefix + b.torch_key].shape),
            b.port_shape,
        )
        for b in bindings
    ]


# -- building the Keras side --------------------------------------------------------------------


def _size(state, key, path, axis: int) -> int:
    """The layer's size read off a kernel: axis ``axis`` of ``state[key]``, refused when that
    key is missing or is not a kernel (a 1-D tensor under a kernel's name)."""
    if key not in state:
        raise CheckpointError(
            f"{path} has no {key!r}, which tells the layer's size (wrong --module or --prefix?)"
        )
    shape = tuple(state[key].shape)
    if len(shape) != 4:
        raise CheckpointError(
            f"{path}: {key!r} has shape {shape}, not a convolution kernel (out, in, kH, kW), "
            "so it cannot tell the layer's size"
        )
    return shape[axis]


def modules() -> list[str]:
    """The registered pairs a checkpoint can be converted for."""
    return [name for name, d in registry.definitions().items() if d.checkpoint is not None]


def default_module() -> str:
    """The pair ``parity convert`` converts when ``--module`` is not given."""
    return next(
        (n for n, d in registry.definitions().items() if d.checkpoint and d.checkpoint.default),
        modules()[0],
    )


def keras_layer(module: str, **sizes):
    """The bundled Keras layer for ``module``, built for ``sizes["channels"]``."""
    layer = registry.definition(module).checkpoint.make_layer(**sizes)
    layer.build((None, None, None, sizes["channels"]))
    return layer


def _layer_for_state(module, state, prefix, path):
    def read(key, axis):
        return _size(state, prefix + key, path, axis)

    sizes = registry.definition(module).checkpoint.from_state(read)
    return keras_layer(module, **sizes), sizes


def load_keras_weights(layer, path: str | Path):
    """Load a ``.weights.h5`` written by ``parity convert`` into a built bundled layer."""
    port_framework().load_weights(layer, str(path))
    return layer


def _h5_sizes(path: Path, module: str) -> dict[str, int]:
    """The layer's sizes read off the kernels in a .weights.h5 file."""
    import h5py

    kernels = {}

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and len(item.shape) == 4:
            kernels[name] = item.shape

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(visit)
    except OSError as error:
        raise CheckpointError(f"cannot read {path} as Keras weights: {error}") from None

    return registry.definition(module).checkpoint.from_keras(_Kernels(kernels, path, module))


class _Kernels:
    """The kernels of a .weights.h5 file by path: ``kernels(part)`` is the first one under a
    path segment ``part``; ``kernels.all(part)``, every one's shape."""

    def __init__(self, kernels: dict[str, tuple], path: Path, module: str):
        self.kernels, self.path, self.module = kernels, path, module

    def all(self, part: str) -> list[tuple]:
        return [shape for name, shape in sorted(self.kernels.items()) if f"/{part}/" in f"/{name}"]

    def __call__(self, part: str) -> tuple:
        found = self.all(part)
        if not found:
            raise CheckpointError(
                f"{self.path} has no {part} kernel: not a {self.module} weights file"
            )
        return found[0]


# -- writing -----------------------------------------------------------------------------------


def _atomic(target: Path, suffix: str, write) -> None:
    """Write through a temporary file next to ``target``, then rename: never half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.partial-", suffix=suffix
    )
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private; an output is not
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def torch_to_keras(
    source: str | Path,
    target: str | Path,
    *,
    module: str,
    prefix: str = "",
    ignore: Iterable[str] = (),
) -> Conversion:
    source, target = Path(source), Path(target)
    state = read_torch_checkpoint(source)
    if prefix and not any(key.startswith(prefix) for key in state):
        raise CheckpointError(f"{source} has no key under the prefix {prefix!r}")
    layer, sizes = _layer_for_state(module, state, prefix, source)
    patterns = (*ALWAYS_IGNORED, *ignore)
    try:
        bindings = load_state_dict(layer, state, prefix=prefix, ignore=patterns)
    except StateDictMismatchError as error:
        raise CheckpointError(f"{error} (pass --ignore KEY to leave a key out)") from None
    _atomic(target, KERAS_SUFFIX, lambda path: port_framework().save_weights(layer, path))
    conversion = Conversion(
        rows=_rows(bindings, state, prefix),
        ignored=sorted(
            key
            for key in state
            if key.startswith(prefix) and any(fnmatchcase(key[len(prefix) :], p) for p in patterns)
        ),
    )
    describe = registry.definition(module).checkpoint.describe
    if describe is not None:
        conversion.notes.append(
            f"load it with parity.load_keras_weights(layer, {str(target)!r}) "
            f"into a built {describe(sizes)}"
        )
    return conversion


def keras_to_torch(
    source: str | Path, target: str | Path, *, module: str, prefix: str = ""
) -> Conversion:
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise CheckpointError(f"no such weights file: {source}")
    layer = keras_layer(module, **_h5_sizes(source, module))
    try:
        load_keras_weights(layer, source)
    except (ValueError, KeyError) as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{source} does not fit a {module}: {first}") from None
    state = export_state_dict(layer, prefix=prefix)
    conversion = Conversion(rows=_rows(bindings_for(layer), state, prefix))
    counters = [
        key.removesuffix("running_var") + "num_batches_tracked"
        for key in state
        if key.endswith(".running_var")
    ]
    if counters:
        for counter in counters:
            state[counter] = np.zeros((), np.int64)
        conversion.notes.append(
            f"{len(counters)} num_batches_tracked counters have no Keras counterpart: written "
            f"as 0, so that the file loads into the PyTorch {module} (the counter only matters for "
            "BatchNorm with momentum=None)"
        )
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in state.items()}
    _atomic(target, ".safetensors", lambda path: save_file(contiguous, path))
    return conversion


def convert(source, target, *, module=None, prefix="", ignore=()) -> Conversion:
    """Pick the direction from the file names; ``module`` defaults to ``default_module()``."""
    source, target = Path(source), Path(target)
    module = module or default_module()
    if module not in modules():
        raise CheckpointError(f"unknown --module {module!r}; expected one of {modules()}")
    if target.exists() and target.is_dir():
        raise CheckpointError(f"{target} is a directory; name the output file")
    if str(target).endswith(KERAS_SUFFIX) and (source.suffix in (*TORCH_SUFFIXES, ".safetensors")):
        return torch_to_keras(source, target, module=module, prefix=prefix, ignore=ignore)
    if str(source).endswith(KERAS_SUFFIX) and target.suffix == ".safetensors":
        if ignore:
            raise CheckpointError("--ignore applies to PyTorch checkpoints, not Keras weights")
        return keras_to_torch(source, target, module=module, prefix=prefix)
    raise CheckpointError(
        f"cannot convert {source.name} into {target.name}: expected a PyTorch checkpoint "
        f"(.pth, .pt, .bin, .safetensors) into {KERAS_SUFFIX}, or {KERAS_SUFFIX} into "
        ".safetensors"
    )
