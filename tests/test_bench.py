"""``parity bench``: the lean PAM against PAM_Module, the command, the memory probe."""

import json
import re
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
def test_lean_pam_matches_pam_module_in_float64(side, chunk_size):
    """H*W not a multiple of the block (81 = 4*20 + 1, 144 = 20*7 + 4) and one block."""
    result = bench.lean_parity(side, channels=24, chunk_size=chunk_size)
    assert result["passed"], result
    assert result["ratio"] <= result["allowed_ratio"]


def test_lean_parity_rejects_a_wrong_chunked_port():
    layer = ChunkedSoftmaxOverQueries(chunk_size=7)
    result = bench.lean_parity(12, channels=24, chunk_size=7, layer=layer)
    assert not result["passed"]
    assert result["ratio"] > 1e3


def test_lean_parity_refuses_a_truth_that_does_not_fit():
    with pytest.raises(ValueError, match="256: PAM_Module's float64 attention would take 32 GiB"):
        bench.lean_parity(256, channels=8)


TABLE_ROW = re.compile(
    r"^(?P<module>\w+)\s+(?P<shape>\([\d, ]+\))\s+(?P<implementation>\S+)\s+"
    r"(?P<forward>[\d.]+)\s+(?P<backward>[\d.]+)\s+(?P<vs_forward>[\d.]+)/(?P<vs_backward>[\d.]+)"
)


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
    assert plot.stat().st_size > 0

    # Each implementation timed in runs of its own: no two share a time.
    for module in bench.SHAPES:
        times = [(r["forward_ms"], r["backward_ms"]) for r in rows if r["module"] == module]
        assert len(set(times)) == len(implementations), times

    # The table prints every Keras mode's time against PyTorch's from these runs.
    printed = {
        (m["module"], m["implementation"]): m
        for m in map(TABLE_ROW.match, result.stdout.splitlines())
        if m
    }
    torch_rows = {r["module"]: r for r in rows if r["implementation"] == "torch"}
    for r in rows:
        if r["implementation"] == "torch":
            continue
        line = printed[(r["module"], r["implementation"])]
        base = torch_rows[r["module"]]
        assert line["forward"] == f"{r['forward_ms']:.1f}"
        assert line["vs_forward"] == f"{r['forward_ms'] / base['forward_ms']:.2f}"
        assert line["vs_backward"] == f"{r['backward_ms'] / base['backward_ms']:.2f}"


def test_peak_memory_sees_the_attention_matrix():
    """Forward and backward of a dense PAM hold at least its (H*W)^2 float32 attention (the
    probe once measured TensorFlow after a warm-up run, and saw almost nothing)."""
    attention_mb = 4 * (48 * 48) ** 2 / 2**20  # 20 MB
    peak = bench.peak_in_subprocess("pam", [1, 16, 48, 48], "keras-eager")
    assert peak is not None and peak > attention_mb
