#!/usr/bin/env bash
# Bench the whole DANet on one GPU: the PyTorch reference (CUDA, float32, eval mode) against the
# Keras port (impl_keras.DANet) on KERAS_BACKEND=torch and KERAS_BACKEND=jax, full width,
# ResNet-50 and ResNet-101, 19 classes, at (1, 3, 512, 512) and (1, 3, 768, 768).
#
# Per row: forward and forward+backward (gradients w.r.t. the input and every trainable
# parameter, a random cotangent on each of the three outputs) median ms over REPEATS runs after
# WARMUP untimed ones (the first compiles, on JAX), min-max beside it; and peak device memory of
# building the model and its input and running forward+backward once, above what the process
# held before: torch.cuda.max_memory_allocated (the reference, Keras on torch) and JAX's
# memory_stats()["peak_bytes_in_use"] (Keras on JAX). Each (implementation, backbone, side)
# runs in a process of its own, so that every peak starts clean. Dense PAM everywhere: at
# 768x768 its attention is 9216^2 float32 = 340 MB.
#
# Strict float32 by default: TF32 off in PyTorch (cuDNN convolutions, matmuls) and JAX's
# default matmul precision "highest", so that the three compute the same thing the CPU table
# does. TF32=1 lets both use TF32 (faster; then say so next to the figures).
#
# Needs: python3 with torch (CUDA), jax (CUDA) and keras 3; no TensorFlow (parity imports none
# on the torch and JAX backends). Run from the repository root (or set REPO=...).
# Output: a table on stdout, one JSON line per row in $OUT_JSON (default gpu_bench_danet.jsonl).
# Expected runtime on an H200: about 3-4 minutes, mostly process start and JAX compilation.
#
# Knobs (environment): SIDES="512 768", BACKBONES="resnet50 resnet101",
# IMPLS="torch keras-torch keras-jax", REPEATS=10, WARMUP=2, TF32=0, PYTHON=python3,
# NARROW=1 (the test suite's narrow network instead of the full one: a smoke test on any box).
set -euo pipefail

REPO=${REPO:-$(pwd)}
PYTHON=${PYTHON:-python3}
SIDES=${SIDES:-"512 768"}
BACKBONES=${BACKBONES:-"resnet50 resnet101"}
IMPLS=${IMPLS:-"torch keras-torch keras-jax"}
OUT_JSON=${OUT_JSON:-gpu_bench_danet.jsonl}
export REPEATS=${REPEATS:-10} WARMUP=${WARMUP:-2} TF32=${TF32:-0} NARROW=${NARROW:-0}
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX's memory stats then count what it uses
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

test -f "$REPO/parity/pairs/danet.py" || { echo "run from the repository root (or set REPO)" >&2; exit 2; }

ONE=$(mktemp /tmp/danet_gpu_one.XXXXXX.py)
trap 'rm -f "$ONE"' EXIT
cat > "$ONE" <<'PY'
"""One row: IMPL BACKBONE SIDE -> a JSON line on stdout."""
import json, os, statistics, sys, time

impl, backbone, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
repeats, warmup = int(os.environ["REPEATS"]), int(os.environ["WARMUP"])
tf32, narrow = os.environ["TF32"] == "1", os.environ["NARROW"] == "1"
if impl.startswith("keras-"):
    os.environ["KERAS_BACKEND"] = impl.removeprefix("keras-")

import numpy as np
import torch

torch.backends.cudnn.allow_tf32 = tf32
torch.backends.cuda.matmul.allow_tf32 = tf32
device = "cuda" if torch.cuda.is_available() else "cpu"

from parity import bench  # no TensorFlow imported on the torch and JAX backends

variant = bench.variant("danet", backbone)
make_reference, make_port = variant.make_reference, variant.make_port
if narrow:  # the property suite's network: a smoke test of this script
    from parity.pairs.danet import TEST_BLOCKS, TEST_WIDTH
    small = dict(width=TEST_WIDTH, blocks=TEST_BLOCKS)

    def make_reference(channels):
        from reference_torch import DANet
        return DANet(19, backbone, **small)

    def make_port(channels):
        from impl_keras import DANet
        return DANet(19, backbone, **small)

shape = (1, 3, side, side)
rng = np.random.default_rng(0)
x_nchw = rng.standard_normal(shape).astype("float32")
x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def timed(run, sync):
    for _ in range(warmup):
        sync(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(run())
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def torch_sync(_):
    if device == "cuda":
        torch.cuda.synchronize()


def torch_peak(build_and_run):
    """Peak allocated above the allocation before the model and input exist (MB)."""
    if device != "cuda":
        build_and_run()
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    kept = build_and_run()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    del kept
    return peak


def torch_reference():
    def build():
        model = make_reference(3).eval().to(device)
        x = torch.tensor(x_nchw, device=device)
        with torch.no_grad():
            outputs = model(x)
        cots = [torch.randn_like(y) for y in outputs]
        params = list(model.parameters())

        def forward():
            with torch.no_grad():
                return model(x)

        def forward_backward():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(model(xg), [xg, *params], cots)

        return forward, forward_backward

    peak = torch_peak(lambda: build()[1]())
    forward, forward_backward = build()
    return timed(forward, torch_sync), timed(forward_backward, torch_sync), peak


def keras_torch():
    import keras

    def build():
        layer = make_port(3)
        x = keras.ops.convert_to_tensor(x_nhwc)  # on the GPU: Keras' torch device
        with torch.no_grad():
            outputs = layer(x)
        cots = [torch.randn_like(y) for y in outputs]
        params = [v.value for v in layer.trainable_variables]

        def forward():
            with torch.no_grad():
                return layer(x)

        def forward_backward():
            xg = x.detach().requires_grad_(True)
            return torch.autograd.grad(layer(xg), [xg, *params], cots)

        return forward, forward_backward

    peak = torch_peak(lambda: build()[1]())
    forward, forward_backward = build()
    return timed(forward, torch_sync), timed(forward_backward, torch_sync), peak


def keras_jax():
    import jax
    import jax.numpy as jnp

    if not tf32:
        jax.config.update("jax_default_matmul_precision", "highest")
    stats = lambda: jax.devices()[0].memory_stats() or {}  # noqa: E731 (None on CPU)
    before = stats().get("bytes_in_use")

    layer = make_port(3)
    x = jnp.asarray(x_nhwc)
    layer(x)  # builds the weights
    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def outputs_of(t, nt, x):
        return tuple(layer.stateless_call(t, nt, x)[0])

    forward = jax.jit(outputs_of)
    cots = tuple(
        jax.random.normal(jax.random.PRNGKey(i), y.shape, y.dtype)
        for i, y in enumerate(forward(trainable, non_trainable, x))
    )

    @jax.jit
    def forward_backward(t, nt, x, cots):
        _, pull = jax.vjp(lambda x, t: outputs_of(t, nt, x), x, t)
        return pull(cots)

    forward_backward(trainable, non_trainable, x, cots)
    # The allocator's peak includes XLA's autotuning at compile time (it tried 130 GiB here):
    # XLA's own plan of the compiled forward+backward instead (arguments, outputs, temporaries).
    plan = forward_backward.lower(trainable, non_trainable, x, cots).compile().memory_analysis()
    peak = None if plan is None else (
        plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes
        - plan.alias_size_in_bytes) / 2**20
    sync = jax.block_until_ready
    return (
        timed(lambda: forward(trainable, non_trainable, x), sync),
        timed(lambda: forward_backward(trainable, non_trainable, x, cots), sync),
        peak,
    )


run = {"torch": torch_reference, "keras-torch": keras_torch, "keras-jax": keras_jax}[impl]
forward_ms, backward_ms, peak_mb = run()
print(json.dumps({
    "module": "danet", "variant": backbone, "shape": list(shape), "implementation": impl,
    "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    "tf32": tf32, "narrow": narrow,
    "forward_ms": statistics.median(forward_ms), "backward_ms": statistics.median(backward_ms),
    "forward_runs_ms": forward_ms, "backward_runs_ms": backward_ms,
    "gflop": None if narrow else variant.flops(shape) / 1e9, "peak_mb": peak_mb,
}))
PY

echo "# $(date -u) $(KERAS_BACKEND=torch $PYTHON -c 'import torch, keras, jax; print("torch", torch.__version__, "keras", keras.__version__, "jax", jax.__version__)')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
: > "$OUT_JSON"
for side in $SIDES; do
  for backbone in $BACKBONES; do
    for impl in $IMPLS; do
      echo "danet/$backbone 1,3,$side,$side $impl..." >&2
      if ! $PYTHON "$ONE" "$impl" "$backbone" "$side" 2> >(grep -v -i warning >&2) | tail -1 >> "$OUT_JSON"; then
        echo "  failed: $impl $backbone $side" >&2
      fi
    done
  done
done

$PYTHON - "$OUT_JSON" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
base = {(r["variant"], tuple(r["shape"])): r for r in rows if r["implementation"] == "torch"}
print(f"{'module':<16} {'shape':<18} {'implementation':<12} {'fwd ms':>8} {'(min-max)':>15} "
      f"{'fwd+bwd ms':>10} {'(min-max)':>15} {'vs torch':>10} {'TFLOP/s':>8} {'peak MB':>8}")
for r in rows:
    b = base.get((r["variant"], tuple(r["shape"])))
    vs = "-" if b is None else f"{r['forward_ms'] / b['forward_ms']:.2f}/{r['backward_ms'] / b['backward_ms']:.2f}"
    f, g = r["forward_runs_ms"], r["backward_runs_ms"]
    peak = "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
    rate = "-" if r["gflop"] is None else f"{r['gflop'] / r['forward_ms']:.1f}"
    print(f"{'danet/' + r['variant']:<16} {str(tuple(r['shape'])):<18} {r['implementation']:<12} "
          f"{r['forward_ms']:>8.1f} {f'({min(f):.1f}-{max(f):.1f})':>15} {r['backward_ms']:>10.1f} "
          f"{f'({min(g):.1f}-{max(g):.1f})':>15} {vs:>10} {rate:>8} {peak:>8}")
print(f"device: {rows[0]['device'] if rows else '-'}; tf32: {rows[0]['tf32'] if rows else '-'}; "
      f"JSON lines: {sys.argv[1]}")
PY
