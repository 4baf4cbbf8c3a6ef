#!/usr/bin/env bash
# scripts/gpu-check.sh: the one check to run on a machine with an NVIDIA GPU, CUDA 13
# (or 12) libraries and PyTorch, but no Go. It uses artifacts built elsewhere with
#
#   make build                                                   # bin/cohort
#   CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o bin/gpu.test ./internal/gpu
#   CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o bin/gpu-gorgoniaops.test ./internal/gpu/gorgoniaops
#   CGO_ENABLED=0 go test -c -trimpath -ldflags '-s -w' -o bin/worker.test ./worker
#
# (the Makefile's gpu-artifacts target) and writes everything into $OUT:
#   env.txt          nvidia-smi, library locations, versions
#   gpu-info.json    bin/cohort gpu info --probe -o json
#   gpu-test.txt     bin/gpu.test -test.v with COHORT_REQUIRE_GPU=1 (skips become failures)
#   gorgoniaops-test.txt  the same for bin/gpu-gorgoniaops.test, when it was built
#   worker-gpu-test.txt  the worker's training step on the GPU against its CPU model
#                    (bin/worker.test, TestGPUModelMatchesCPU/gpu), when it was built
#   train-step.json  bin/cohort bench compute on the attrition example, --device gpu and
#                    --device cpu (a whole training step: parameters up, gradients back)
#   gpu-bench.txt    the Go GPU benchmarks (GEMM, fashion-cnn convolutions, an MLP step)
#   torch-bench.txt  PyTorch on the same shapes and GPU, FP32 without TF32
#   summary.txt      each step's exit status
# Run from the repository root. Exit status 0 only when every step passed.
set -uo pipefail

OUT=${OUT:-$PWD/gpu-check-out}
BIN=${BIN:-$PWD/bin}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
: >"$summary"
status=0
step() { # step NAME EXIT_CODE
	echo "$1: exit $2" | tee -a "$summary"
	[ "$2" -eq 0 ] || status=1
}

for f in "$BIN/cohort" "$BIN/gpu.test"; do
	if [ ! -x "$f" ]; then
		echo "gpu-check: $f missing; build it with 'make gpu-artifacts' on a machine with Go" >&2
		exit 2
	fi
done

# Where the CUDA user-space libraries are: a toolkit install, or the pip wheels that
# PyTorch brings (site-packages/nvidia/*/lib). The driver's libcuda and libnvidia-ml
# are found by the system loader.
libdirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/*-linux/lib /usr/local/cuda-1[23]*/lib64; do
	[ -d "$d" ] && libdirs+=("$d")
done
pydirs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site
roots = list(site.getsitepackages()) + [site.getusersitepackages()]
try:
    import torch
    roots.append(os.path.dirname(os.path.dirname(torch.__file__)))
except Exception:
    pass
hits = []
for r in roots:
    for pat in ("nvidia/**/libcublas.so*", "nvidia/**/libnvrtc.so*", "nvidia/**/libnvrtc-builtins.so*"):
        for f in glob.glob(os.path.join(r, pat), recursive=True):
            d = os.path.dirname(f)
            if d not in hits:
                hits.append(d)
print(":".join(hits))
PY
)
IFS=: read -r -a pyarr <<<"$pydirs"
libdirs+=("${pyarr[@]}")
COHORT_CUDA_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")
export COHORT_CUDA_LIBRARY_PATH
# NVRTC loads libnvrtc-builtins by name, so its directory must be on the loader's path.
export LD_LIBRARY_PATH="$COHORT_CUDA_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
	echo "date: $(date -u +%FT%TZ)"
	echo "uname: $(uname -a)"
	echo "COHORT_CUDA_LIBRARY_PATH=$COHORT_CUDA_LIBRARY_PATH"
	echo "--- nvidia-smi"
	nvidia-smi 2>&1 || true
	echo "--- ldconfig"
	ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvidia-ml|libcublas\.so|libnvrtc\.so' || true
	echo "--- libraries on COHORT_CUDA_LIBRARY_PATH"
	for d in "${libdirs[@]}"; do ls "$d" 2>/dev/null | grep -E '^lib(cublas|nvrtc)' | sed "s|^|$d/|"; done
	echo "--- python"
	python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 || true
	echo "--- file bin/cohort"
	file "$BIN/cohort" 2>/dev/null || true
} >"$OUT/env.txt" 2>&1

"$BIN/cohort" gpu info --probe --require -o json >"$OUT/gpu-info.json" 2>"$OUT/gpu-info.stderr"
step "cohort gpu info --probe --require" $?
cat "$OUT/gpu-info.json"

# The test binary runs in its package directory so testdata/ (the emulator's fakes,
# which need gcc and are skipped without it) is found.
(cd internal/gpu && COHORT_REQUIRE_GPU=1 "$BIN/gpu.test" -test.v -test.count=1 -test.timeout=5m) \
	>"$OUT/gpu-test.txt" 2>&1
step "gpu.test (COHORT_REQUIRE_GPU=1)" $?
grep -E '^(--- FAIL|FAIL|ok|PASS)|--- SKIP: .*/gpu' "$OUT/gpu-test.txt" | tail -40

if [ -x "$BIN/gpu-gorgoniaops.test" ]; then
	COHORT_REQUIRE_GPU=1 "$BIN/gpu-gorgoniaops.test" -test.v -test.count=1 -test.timeout=5m \
		>"$OUT/gorgoniaops-test.txt" 2>&1
	step "gpu-gorgoniaops.test (COHORT_REQUIRE_GPU=1)" $?
	grep -E '^(--- FAIL|FAIL|ok|PASS)' "$OUT/gorgoniaops-test.txt"
fi

if [ -x "$BIN/worker.test" ]; then
	(cd worker && COHORT_REQUIRE_GPU=1 "$BIN/worker.test" -test.run 'TestGPUModelMatchesCPU/gpu' -test.v -test.count=1 -test.timeout=5m) \
		>"$OUT/worker-gpu-test.txt" 2>&1
	step "worker.test training step on the GPU (COHORT_REQUIRE_GPU=1)" $?
	grep -E '^(--- FAIL|FAIL|ok|PASS)|--- (PASS|SKIP|FAIL): TestGPUModelMatchesCPU/gpu' "$OUT/worker-gpu-test.txt"
fi

# A whole training step as a worker placed with a GPU runs it, then on the CPU, on the
# attrition example (batch 32); torch-bench.txt has PyTorch's step on the same shapes.
{
	"$BIN/cohort" bench compute --job jobs/examples/attrition-mlp.yaml --device gpu --steps 500 --warmup 20 -o json
	gstatus=$?
	"$BIN/cohort" bench compute --job jobs/examples/attrition-mlp.yaml --device cpu --steps 500 --warmup 20 -o json
	exit $(( gstatus || $? ))
} >"$OUT/train-step.json" 2>"$OUT/train-step.stderr"
step "cohort bench compute --device gpu|cpu (attrition-mlp)" $?
cat "$OUT/train-step.json"

(cd internal/gpu && "$BIN/gpu.test" -test.run '^$' -test.bench 'GPU' -test.benchtime=2s -test.timeout=5m) \
	>"$OUT/gpu-bench.txt" 2>&1
step "gpu.test benchmarks" $?
grep -E '^Benchmark' "$OUT/gpu-bench.txt"

python3 - >"$OUT/torch-bench.txt" 2>&1 <<'PY'
# PyTorch on the shapes of internal/gpu/bench_test.go, FP32 with TF32 off like cuBLAS's
# default math mode that Cohort uses.
import time, torch
import torch.nn.functional as F
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))

def bench(name, fn, flops, min_time=2.0):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn(); n += 1
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / n
    print(f"torch/{name}\t{n}\t{dt*1e9:.0f} ns/op\t{flops/dt/1e9:.1f} GFLOP/s")

for m, n, k in [(1024, 1024, 1024), (4096, 4096, 4096)]:
    a, b = torch.randn(m, k, device=dev), torch.randn(k, n, device=dev)
    bench(f"Gemm/{m}x{n}x{k}", lambda: a @ b, 2 * m * n * k)
a, b = torch.randn(64, 1600, device=dev), torch.randn(1600, 128, device=dev)
bench("Gemm/fashion-dense-64x1600x128", lambda: a @ b, 2 * 64 * 128 * 1600)

for name, (n, c, h, w, f) in {"fashion-conv1-64x1x28x28-f32k3": (64, 1, 28, 28, 32),
                              "fashion-conv2-64x32x13x13-f64k3": (64, 32, 13, 13, 64)}.items():
    x = torch.randn(n, c, h, w, device=dev, requires_grad=True)
    wt = torch.randn(f, c, 3, 3, device=dev, requires_grad=True)
    bias = torch.randn(f, device=dev, requires_grad=True)
    flops = 2 * n * f * (h - 2) * (w - 2) * c * 9
    bench(f"Conv2D/{name}/forward", lambda: F.conv2d(x, wt, bias), flops)
    y = F.conv2d(x, wt, bias)
    dy = torch.randn_like(y)
    bench(f"Conv2D/{name}/backward", lambda: torch.autograd.grad(y, (x, wt, bias), dy, retain_graph=True), 2 * flops)

sizes, rows = [784, 256, 128, 10], 256
layers = [torch.nn.Linear(sizes[i], sizes[i + 1]).to(dev) for i in range(3)]
xh, th = torch.randn(rows, 784), torch.randint(0, 10, (rows,))
def mlp_step():
    x, t = xh.to(dev), th.to(dev)   # the batch goes in every step, as in Cohort's MLP.Step
    h = x
    for i, l in enumerate(layers):
        h = l(h)
        if i < 2:
            h = torch.relu(h)
    loss = F.cross_entropy(h, t)
    torch.autograd.grad(loss, [p for l in layers for p in l.parameters()])
    return loss.item()
bench("MLPStep", mlp_step, 0)

# The attrition example's step: 43 features, hidden [64, 32] relu, one logit with
# binary cross-entropy, batch 32; the batch goes in and the gradients come out every step,
# as in a Cohort worker (parameters also go up there: add them with the .to below).
asizes, arows = [43, 64, 32, 1], 32
alayers = [torch.nn.Linear(asizes[i], asizes[i + 1]).to(dev) for i in range(3)]
ax, ay = torch.randn(arows, 43), torch.randint(0, 2, (arows, 1)).float()
aparams_host = [p.detach().cpu() for l in alayers for p in l.parameters()]
def attrition_step():
    with torch.no_grad():
        for p, h in zip([p for l in alayers for p in l.parameters()], aparams_host):
            p.copy_(h.to(dev, non_blocking=False))
    x, y = ax.to(dev), ay.to(dev)
    h = x
    for i, l in enumerate(alayers):
        h = l(h)
        if i < 2:
            h = torch.relu(h)
    loss = F.binary_cross_entropy_with_logits(h, y)
    grads = torch.autograd.grad(loss, [p for l in alayers for p in l.parameters()])
    return [g.cpu() for g in grads]
bench("AttritionStep-batch32", attrition_step, 0)
PY
step "pytorch reference" $?
cat "$OUT/torch-bench.txt"

cat "$summary"
exit $status
