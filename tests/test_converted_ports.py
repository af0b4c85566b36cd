"""A converter's output as a port (``parity check MODULE --convert nobuco``): its weights
mapped back by the values it copied, declared by the port itself, then judged as any port.

The mechanism runs everywhere; nobuco itself only where it is installed (it needs a
torchvision built for the installed torch: docs/exports.md)."""

import importlib.util

import keras
import numpy as np
import pytest
from keras import layers, ops

from parity.backends.nobuco import distinct_values, mapped_by_value
from parity.core import registry
from parity.core.spec import with_port
from parity.core.strategies import Example
from parity.run.assertions import checker_for
from tests.helpers import run_cli

PAM = registry.pair("pam")


class _Gamma(layers.Layer):
    def build(self, input_shape):
        self.weight = self.add_weight(name="weight", shape=(1,), initializer="zeros")

    def call(self, x):
        return self.weight * x


class ExecutionOrderPAM(layers.Layer):
    """Faithful PAM laid out as a converter lays it out: gamma's layer made first, then the
    value convolution, then key and query, all named generically; with its weight map
    declared, as a converter's port knows it."""

    def __init__(self, channels, declare=True, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.declare = channels, declare

    def build(self, input_shape):
        c = self.channels
        self.blocks = [
            _Gamma(),
            layers.Conv2D(c, 1),
            layers.Conv2D(c // 8, 1),
            layers.Conv2D(c // 8, 1),
        ]
        for block in self.blocks:
            block.build(input_shape)
        gamma, value, key, query = self.blocks
        if self.declare:
            self.parity_weight_map = {
                "gamma": gamma.weight,
                "query_conv.weight": query.kernel,
                "query_conv.bias": query.bias,
                "key_conv.weight": key.kernel,
                "key_conv.bias": key.bias,
                "value_conv.weight": value.kernel,
                "value_conv.bias": value.bias,
            }

    def call(self, x):
        gamma, value, key, query = self.blocks
        shape = ops.shape(x)
        flat = lambda t: ops.reshape(t, (shape[0], shape[1] * shape[2], -1))  # noqa: E731
        attention = ops.softmax(ops.matmul(flat(query(x)), ops.transpose(flat(key(x)), (0, 2, 1))))
        return gamma(ops.reshape(ops.matmul(attention, flat(value(x))), shape)) + x


def undeclared(channels):
    return ExecutionOrderPAM(channels, declare=False)


EXAMPLES = (Example(1, 8, 1, 1, 1.0, 0), Example(2, 16, 3, 4, 1.0, 1))


def test_a_port_that_declares_its_weight_map_is_loaded_through_it():
    checker = checker_for(with_port(PAM, ExecutionOrderPAM))
    for example in EXAMPLES:
        report = checker.check(example)
        assert report.passed, report.describe_failures()


def test_without_the_declaration_creation_order_maps_it_wrongly():
    """The power of the declaration: by creation order alone the same port is misread."""
    checker = checker_for(with_port(PAM, undeclared))
    assert not all(checker.check(example).passed for example in EXAMPLES)


def test_weights_are_found_by_the_values_a_converter_copied():
    reference = PAM.make_reference(16).float()
    state = distinct_values(reference)
    port = layers.Conv2D(2, 1)
    port.build((1, 4, 4, 16))
    port.kernel.assign(np.transpose(state["key_conv.weight"], (2, 3, 1, 0)))
    port.bias.assign(state["key_conv.bias"])
    found = mapped_by_value(state, [port.kernel, port.bias])
    assert found == {"key_conv.weight": port.kernel, "key_conv.bias": port.bias}


nobuco_installed = pytest.mark.skipif(
    importlib.util.find_spec("nobuco") is None or importlib.util.find_spec("torchvision") is None,
    reason="nobuco and a torchvision for this torch are not installed (docs/exports.md)",
)


@nobuco_installed
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="nobuco writes tf.keras")
@pytest.mark.parametrize(
    ("module", "examples"), [("pam", 5), ("cam", 5), ("head", 2), ("danet", 2)]
)
def test_nobuco_converts_the_bundled_modules_faithfully(module, examples):
    import subprocess
    import sys

    command = [sys.executable, "-m", "parity", "check", module, "--convert", "nobuco"]
    done = subprocess.run([*command, "--examples", str(examples)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert f"{module}: {examples} examples passed" in done.stdout, done.stdout


@nobuco_installed
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="nobuco writes tf.keras")
@pytest.mark.skipif(
    importlib.util.find_spec("ai_edge_litert") is None, reason="the export extra is not installed"
)
def test_nobucos_conversion_is_checked_as_the_file_it_ships_as():
    """PyTorch -> nobuco -> TFLite, the pipeline as users run it, against the float64 truth."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "parity", "check", "pam", "--convert", "nobuco"]
    done = subprocess.run(
        [*command, "--export", "tflite", "--examples", "3"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "pam: 3 examples passed" in done.stdout and "tflite: outputs only" in done.stdout


def test_convert_takes_one_module_and_no_port(capsys):
    status, _, err = run_cli(["check", "pam", "cam", "--convert", "nobuco"], capsys)
    assert status == 2 and "converts one module" in err, err
    status, _, err = run_cli(["check", "pam", "--convert", "nobuco", "--port", "m:f"], capsys)
    assert status == 2 and "without --port" in err, err
