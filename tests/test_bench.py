"""``parity bench``: the lean PAM against PAM_Module, the command, the whole DANet's rows,
the memory probe."""

import json
import re
import statistics
import subprocess
import sys
from dataclasses import replace

import pytest
from keras import ops

from impl_keras import PositionAttention
from parity.core import registry
from parity.frontends import bench
from parity.pairs.danet import counted_flops


class ChunkedSoftmaxOverQueries(PositionAttention):
    """A chunked PAM whose softmax normalises each block over its query rows."""

    def _attend(self, query, key, value):
        energy = ops.einsum("bnc,bmc->bnm", query, key)
        return ops.einsum("bnm,bmc->bnc", ops.softmax(energy, axis=1), value)


@pytest.mark.parametrize(("side", "chunk_size"), [(9, 20), (12, 7), (5, 1000)])
def test_lean_pam_matches_pam_module_in_float64(side, chunk_size):
    """H*W not a multiple of the block (81 = 4*20 + 1, 144 = 20*7 + 4) and one block."""
    result = bench.lean_parity("pam", side, channels=24, chunk_size=chunk_size)
    assert result["passed"], result
    assert result["ratio"] <= result["allowed_ratio"]


def test_lean_parity_rejects_a_wrong_chunked_port():
    layer = ChunkedSoftmaxOverQueries(chunk_size=7)
    result = bench.lean_parity("pam", 12, channels=24, chunk_size=7, layer=layer)
    assert not result["passed"]
    assert result["ratio"] > 1e3


def test_lean_parity_refuses_a_truth_that_does_not_fit():
    with pytest.raises(
        ValueError, match="256: the reference's float64 attention would take 32 GiB"
    ):
        bench.lean_parity("pam", 256, channels=8)


TABLE_ROW = re.compile(
    r"^(?P<module>[\w/]+)\s+(?P<shape>\([\d, ]+\))\s+(?P<implementation>\S+)\s+"
    r"(?P<forward>[\d.]+)\s+(?P<backward>[\d.]+)\s+(?P<vs_forward>[\d.]+)/(?P<vs_backward>[\d.]+)"
)


def _takes_channels(module: str, channels: int) -> bool:
    size = registry.definition(module).size
    return size.min_channels <= channels <= (size.max_channels or channels)


def test_bench_command_times_every_implementation_of_every_module(tmp_path):
    """Every module that takes 32 channels (the whole DANet reads images: below)."""
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    shapes = [(2, 32, 5, 3)]
    modules = [m for m in bench.SHAPES if _takes_channels(m, 32)]
    argv = ["bench", *modules, "--repeats", "1", "--no-memory", "--json", str(out)]
    argv += ["--plot", str(plot)]
    for shape in shapes:
        argv += ["--shape", ",".join(map(str, shape))]
    result = subprocess.run(
        [sys.executable, "-m", "parity.frontends.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    implementations = {"torch", *(f"keras-{mode}" for mode in bench.KERAS_MODES)}
    assert {(r["module"], tuple(r["shape"]), r["implementation"]) for r in rows} == {
        (module, shape, implementation)
        for module in modules
        for shape in shapes
        for implementation in implementations
    }
    # Timed, nothing more: one run on a shared machine can stall for seconds (a forward
    # pass at 10x the forward+backward one failed a loaded CI run), so no ratio is asserted.
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 for r in rows)
    assert plot.stat().st_size > 0

    # Each implementation timed in runs of its own: no two share a time.
    for module in modules:
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


# -- the whole DANet: a row per backbone -------------------------------------------------------


def test_danet_is_benched_at_full_width_on_each_backbone():
    """The original network: width 64, 19 classes, each backbone's depth (the reference
    built on the meta device: nothing allocated), at 512x512 and 768x768."""
    import torch

    spec = registry.definition("danet").bench
    assert spec.shapes == ((1, 3, 512, 512), (1, 3, 768, 768))
    assert [v.name for v in spec.variants] == ["resnet50", "resnet101"]
    for variant, layer3_blocks in zip(spec.variants, (6, 23), strict=True):
        with torch.device("meta"):
            reference = variant.make_reference(3)
        assert len(reference.pretrained.layer3) == layer3_blocks
        assert reference.pretrained.layer4[-1].conv3.out_channels == 2048
        assert reference.head.conv8[1].out_channels == 19
        config = variant.make_port(3).get_config()
        assert (config["backbone"], config["width"], config["nclass"], config["blocks"]) == (
            variant.name,
            64,
            19,
            None,
        )


def test_danet_flops_count_every_convolution_of_the_backbone():
    """ResNet-101 is ResNet-50 with 17 more bottlenecks in layer3 (1024 -> 256 -> 256 -> 1024
    channels at an eighth of the input's side): the two counts differ by exactly those."""
    shape = (1, 3, 64, 64)
    positions = (64 // 8) ** 2
    bottleneck = 2 * positions * (1024 * 256 + 9 * 256 * 256 + 256 * 1024)
    assert counted_flops("resnet101", shape) - counted_flops("resnet50", shape) == 17 * bottleneck


def _narrow(variant: registry.BenchVariant) -> registry.BenchVariant:
    """The variant with the property suite's narrow, shallow network in place of the full
    one (the factories above are checked on their own): a second, not minutes."""
    from impl_keras import DANet as KerasDANet
    from parity.pairs.danet import TEST_BLOCKS, TEST_WIDTH
    from reference_torch import DANet

    narrow = dict(width=TEST_WIDTH, blocks=TEST_BLOCKS)
    return replace(
        variant,
        make_reference=lambda channels: DANet(19, variant.name, **narrow),
        make_port=lambda channels: KerasDANet(19, variant.name, **narrow),
    )


def test_bench_rows_of_danet_name_the_backbone_and_the_table_agrees(monkeypatch):
    """A row per shape, backbone and implementation, the backbone's FLOPs in each, every run
    kept; the printed table and the JSON say the same."""
    definition = registry.definition("danet")
    narrow = tuple(_narrow(v) for v in definition.bench.variants)
    monkeypatch.setitem(
        registry.definitions(),
        "danet",
        replace(definition, bench=replace(definition.bench, variants=narrow)),
    )
    shape = (2, 3, 9, 7)
    rows = bench.run(
        {"danet": [shape]}, repeats=1, warmup=0, memory=False, modes=("eager",), progress=print
    )
    assert [(r.shape, r.variant, r.implementation) for r in rows] == [
        (shape, backbone, implementation)
        for backbone in ("resnet50", "resnet101")
        for implementation in ("torch", "keras-eager")
    ]
    for r in rows:
        assert len(r.forward_runs_ms) == len(r.backward_runs_ms) == 1
        assert r.forward_ms == statistics.median(r.forward_runs_ms)
        assert r.backward_ms == statistics.median(r.backward_runs_ms)
        assert r.gflop == counted_flops(r.variant, shape) / 1e9

    # The printed table and the JSON hold the same rows, each against its own backbone's torch.
    printed = {
        (m["module"], m["implementation"]): m
        for m in map(TABLE_ROW.match, bench.table(rows, {"torch": 1, "tensorflow": 1}).splitlines())
        if m
    }
    written = json.loads(json.dumps(bench.rows_as_json(rows)))
    assert len(printed) == len(written) == 4
    for r in written:
        line = printed[(f"danet/{r['variant']}", r["implementation"])]
        base = next(
            t for t in written if t["variant"] == r["variant"] and t["implementation"] == "torch"
        )
        assert line["shape"] == str(tuple(r["shape"]))
        assert line["forward"] == f"{r['forward_ms']:.1f}"
        assert line["backward"] == f"{r['backward_ms']:.1f}"
        assert line["vs_forward"] == f"{r['forward_ms'] / base['forward_ms']:.2f}"
        assert line["vs_backward"] == f"{r['backward_ms'] / base['backward_ms']:.2f}"
