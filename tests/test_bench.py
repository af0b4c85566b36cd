"""``parity bench``: the lean PAM's sampled-row parity, the command, the memory probe."""

import json
import subprocess
import sys

import pytest
from keras import ops

from impl_keras import PositionAttention
from parity import bench


class ChunkedSoftmaxOverQueries(PositionAttention):
    """A chunked PAM whose softmax normalises each block over its query rows."""

    def _attend(self, query, key, value):
        energy = ops.einsum("bnc,bmc->bnm", query, key)
        return ops.einsum("bnm,bmc->bnc", ops.softmax(energy, axis=1), value)


@pytest.mark.parametrize(("side", "chunk_size"), [(9, 20), (12, 7), (5, 1000)])
def test_sampled_rows_of_the_lean_pam_match_float64_truth(side, chunk_size):
    """H*W not a multiple of the block (81 = 4*20 + 1, 144 = 20*7 + 4) and one block."""
    result = bench.lean_parity(side, channels=24, chunk_size=chunk_size, samples=16)
    assert result["passed"], result
    assert result["rows"] == 16


def test_sampled_rows_reject_a_wrong_chunked_port():
    layer = ChunkedSoftmaxOverQueries(chunk_size=7)
    result = bench.lean_parity(12, channels=24, chunk_size=7, samples=16, layer=layer)
    assert not result["passed"]
    assert result["ratio"] > 1e3


def test_bench_command_times_every_implementation_of_every_module(tmp_path):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    shapes = [(2, 32, 5, 3)]
    argv = ["bench", "--repeats", "1", "--no-memory", "--json", str(out), "--plot", str(plot)]
    for shape in shapes:
        argv += ["--shape", ",".join(map(str, shape))]
    result = subprocess.run(
        [sys.executable, "-m", "parity.cli", *argv], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    implementations = {"torch", *(f"keras-{mode}" for mode in bench.KERAS_MODES)}
    assert {(r["module"], tuple(r["shape"]), r["implementation"]) for r in rows} == {
        (module, shape, implementation)
        for module in bench.SHAPES
        for shape in shapes
        for implementation in implementations
    }
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > r["forward_ms"] / 10 for r in rows)
    assert result.stdout.count("1.00/1.00") == len(bench.SHAPES) * len(shapes)  # torch vs torch
    assert plot.stat().st_size > 0


def test_peak_memory_sees_the_attention_matrix():
    """Forward and backward of a dense PAM hold at least its (H*W)^2 float32 attention (the
    probe once measured TensorFlow after a warm-up run, and saw almost nothing)."""
    attention_mb = 4 * (48 * 48) ** 2 / 2**20  # 20 MB
    peak = bench.peak_in_subprocess("pam", [1, 16, 48, 48], "keras-eager")
    assert peak is not None and peak > attention_mb
