"""nobuco's conversion of the reference, as a port: ``parity check pam --convert nobuco``
(the port ``parity.backends.nobuco:pam``).

Each factory returns a layer that, when built for an input shape, converts the pair's
PyTorch reference at that shape with ``nobuco.pytorch_to_keras`` (channels last in and out,
the port's layout) and calls the converted model. A converter creates its layers in the
order the forward pass runs them and names them generically (``conv2d_7``), so neither
names nor creation order say which reference parameter each holds; but it copies the values
it is given. The reference is converted with a distinct random value in every element, and
each of the model's weights is mapped back to the parameter whose values it holds (up to
layout): the layer declares that map (``parity_weight_map``) and the engine loads each
example's weights through it, then judges the outputs and every gradient as for a hand
port. The converted model is built for one input shape: each shape gets its own conversion.

nobuco writes Keras 2 models (it imports ``keras.src.engine``): the check runs under tf.keras
2. It imports torchvision, which PyPI builds against the torch release shipped with it; the
install is in ``docs/exports.md``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from parity.core import registry
from parity.core.errors import CannotCheck
from parity.core.layout import infer_layout

INSTALL = "docs/exports.md, 'Converter output as a port'"


class NobucoMissing(CannotCheck):
    def __init__(self, why: str):
        super().__init__(f"--convert nobuco needs nobuco and torchvision: {why} (see {INSTALL})")


def _nobuco():
    from parity.backends.which_keras import keras_resolved_to_tf_keras

    try:
        with keras_resolved_to_tf_keras():
            import nobuco
    except ImportError as error:
        raise NobucoMissing(str(error)) from error
    return nobuco


def distinct_values(reference, seed: int = 0) -> dict[str, np.ndarray]:
    """A random value in every floating element of the reference's state (running variances
    positive), loaded into it: no two elements of two parameters alike."""
    import torch

    rng = np.random.default_rng(seed)
    state = {}
    for key, value in reference.state_dict().items():
        if not value.is_floating_point():
            continue
        drawn = rng.standard_normal(tuple(value.shape))
        state[key] = np.abs(drawn) + 0.5 if key.endswith("running_var") else drawn
    reference.load_state_dict(
        {k: torch.from_numpy(v).to(torch.float32) for k, v in state.items()}, strict=False
    )
    return {k: v.astype(np.float32) for k, v in state.items()}


def mapped_by_value(state: dict[str, np.ndarray], weights) -> dict[str, object]:
    """Reference key -> the weight that holds its values up to layout."""
    found = {}
    for weight in weights:
        value = np.asarray(weight.numpy())
        for key, expected in state.items():
            if key in found:
                continue
            layout = infer_layout(expected.shape, value.shape)
            if layout is not None and np.array_equal(layout.to_torch(value), expected):
                found[key] = weight
                break
    return found


def converted(module: str):
    """The factory of ``module``'s reference as nobuco converts it."""
    definition = registry.definition(module)

    def factory(channels: int):
        import tensorflow as tf
        import torch

        nobuco = _nobuco()

        class NobucoConversion(tf.keras.layers.Layer):
            def build(self, input_shape):
                batch, height, width, depth = (int(d) for d in input_shape)
                reference = definition.pair.make_reference(channels).float().eval()
                state = distinct_values(reference)
                example = torch.randn((batch, depth, height, width), dtype=torch.float32)
                quiet = io.StringIO()  # its trace and progress bars, printed as it converts
                with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
                    self.model = nobuco.pytorch_to_keras(
                        reference,
                        args=[example],
                        inputs_channel_order=nobuco.ChannelOrder.TENSORFLOW,
                        outputs_channel_order=nobuco.ChannelOrder.TENSORFLOW,
                        save_trace_html=False,
                    )
                self.parity_weight_map = mapped_by_value(state, self.model.weights)
                super().build(input_shape)

            def call(self, x):
                return self.model(x)

        return NobucoConversion(name=f"nobuco_{module}")

    factory.__name__ = factory.__qualname__ = module
    return factory


pam = converted("pam")
cam = converted("cam")
head = converted("head")
cbam = converted("cbam")
danet = converted("danet")
