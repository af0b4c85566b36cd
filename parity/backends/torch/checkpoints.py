"""PyTorch checkpoints read as untrusted input: ``.pth``/``.pt``/``.bin`` through
``torch.load(..., weights_only=True)`` (no code from the file runs), ``.safetensors`` through
safetensors; either way a state_dict of NumPy arrays, or a ``CheckpointError``.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np

from parity.core.errors import CheckpointError
from parity.core.layout import to_numpy

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint's tensors, read without running any code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {path} as safetensors: {error}") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"cannot tell the format of {path}: expected .pth, .pt, .bin or .safetensors"
        )
    import torch

    try:
        with warnings.catch_warnings():
            # A pickle written by pickle.dump rather than torch.save: refused just below
            # if it holds anything but tensors, read if it does not.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"refusing to load {path}: it holds pickled Python objects (a whole model?), not "
            "a state_dict of tensors, and may carry code; save the state_dict "
            "instead: torch.save(model.state_dict(), path)"
        ) from None
    except Exception as error:  # corrupt or truncated files, wrong formats
        raise CheckpointError(f"cannot read {path}: {type(error).__name__}: {error}") from None
    return _tensors(loaded, path)


def _tensors(loaded, path) -> dict[str, np.ndarray]:
    """The state_dict inside a checkpoint (bare, or under 'state_dict' / 'model')."""
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{path} holds no state_dict (a mapping of names to tensors)")
    tensors = {k: to_numpy(v) for k, v in loaded.items() if hasattr(v, "detach")}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors")
    return tensors
