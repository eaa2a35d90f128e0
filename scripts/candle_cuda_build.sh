#!/usr/bin/env bash
# Build flashopt-candle's `cuda_check` example (candle's CUDA device) on a machine
# with no CUDA toolkit and no GPU, to run on a GPU machine that has no Rust:
#
#   scripts/candle_cuda_build.sh WORK [cargo profile flags...]
#   scripts/candle_cuda_build.sh WORK --check   # compile and lint only (CI): clippy on
#                                               # flashopt-candle with `cuda`, no link
#
# 1. candle-kernels runs `nvcc` when it builds. Debian 12's non-free CUDA 11.8
#    toolkit is fetched into WORK (apt-get download with a private state, dpkg -x:
#    nothing is installed) with libcu++ from PyPI; nvcc is told to accept GCC 12 and
#    to build PTX for compute 8.0 (11.8 does not know candle's `compute_90a`; PTX for
#    8.0 runs on Hopper).
# 2. candle turns on cudarc's `dynamic-linking`, so the binary links libcuda,
#    libnvrtc, libcublas(Lt), libcurand, libnccl and libcudart by name. Stub libraries
#    with the CUDA 13 sonames (one empty function per symbol the crates reference)
#    stand in for them at link time; the GPU machine's own libraries are found at
#    run time (LD_LIBRARY_PATH). The example links with lazy binding, so that a
#    binding the machine's CUDA lacks fails only if called.
#
# Prints the binary's path last. Run it there as
#   LD_LIBRARY_PATH=<folder with libcublas.so.13, libnvrtc.so.13, ...> cuda_check 5
set -euo pipefail
work=$(realpath -m "${1:?usage: $0 WORK [cargo flags]}")
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
cuda=$work/cuda118
if [ ! -x "$cuda/usr/lib/nvidia-cuda-toolkit/bin/nvcc" ]; then
    apt=$work/apt
    mkdir -p "$apt/lists/partial" "$apt/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main contrib non-free" > "$apt/sources.list"
    opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists="$apt/lists" -o Dir::Cache::Archives="$apt/archives"
          -o Debug::NoLocking=1)
    apt-get "${opts[@]}" update >/dev/null
    (cd "$apt/archives" && apt-get "${opts[@]}" download \
        nvidia-cuda-toolkit nvidia-cuda-dev libnvvm4 >/dev/null)
    for deb in "$apt"/archives/*.deb; do dpkg -x "$deb" "$cuda"; done
    rm -rf "$apt"
    # libcu++ (cuda/std/...), which Debian packages apart.
    python3 -m pip install --quiet --no-deps --target "$work/cccl" nvidia-cuda-cccl-cu11
    cp -r "$work"/cccl/nvidia/cuda_cccl/include/. "$cuda/usr/include/"
    cat > "$cuda/usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile" <<EOF
TOP = \$(_HERE_)/..
NVVMIR_LIBRARY_DIR = \$(TOP)/libdevice
PATH += \$(_HERE_):
INCLUDES += "-I$cuda/usr/include" \$(_SPACE_)
LIBRARIES =+ \$(_SPACE_) -L$cuda/usr/lib/x86_64-linux-gnu
EOF
fi

# The toolkit's bin holds gcc wrappers for nvcc: the stubs take the system's compiler.
host_cc=$(command -v gcc)
export PATH=$cuda/usr/lib/nvidia-cuda-toolkit/bin:$cuda/usr/bin:$PATH
export CUDA_COMPUTE_CAP=80 CUDARC_CUDA_VERSION=13040
export NVCC_APPEND_FLAGS="-allow-unsupported-compiler -ccbin /usr/bin/g++"
export CARGO_TARGET_DIR=$work/target
cd "$repo"
if [ "${1:-}" = --check ]; then
    cargo clippy -p flashopt-candle --features cuda --all-targets -- -D warnings
    exit
fi
# Everything but the final link (which fails without the libraries).
cargo build -p flashopt-candle --features cuda --example cuda_check "$@" 2>/dev/null || true

stubs=$work/stubs
rm -rf "$stubs" && mkdir -p "$stubs"
profile=debug
for a in "$@"; do [ "$a" = --release ] && profile=release; done
find "$CARGO_TARGET_DIR/$profile" -name '*.rlib' -o -name 'libmoe.a' | while read -r f; do
    nm -u "$f" 2>/dev/null | awk '{print $NF}'
done | grep -v ':$' | grep -E '^(cu[A-Z]|cuda|__cuda|cublas|curand|nccl|nvrtc)' | sort -u | python3 -c '
import subprocess, sys
libs = [("cublasLt", "libcublasLt.so.13"), ("cublas", "libcublas.so.13"),
        ("curand", "libcurand.so.10"), ("nccl", "libnccl.so.2"), ("nvrtc", "libnvrtc.so.13"),
        ("cuda", "libcudart.so.13"), ("__cuda", "libcudart.so.13"), ("cu", "libcuda.so.1")]
by_lib = {}
for name in sys.stdin.read().split():
    lib = next(l for prefix, l in libs if name.startswith(prefix))
    by_lib.setdefault(lib, []).append(name)
for lib, names in by_lib.items():
    c = f"{sys.argv[1]}/{lib}.c"
    open(c, "w").write("".join(f"void {n}(void) {{}}\n" for n in names))
    subprocess.check_call([sys.argv[2], "-shared", "-fPIC", "-o", f"{sys.argv[1]}/{lib}", f"-Wl,-soname,{lib}", c])
    link = lib.split(".so")[0] + ".so"
    subprocess.check_call(["ln", "-sf", lib, f"{sys.argv[1]}/{link}"])
' "$stubs" "$host_cc"
LIBRARY_PATH=$stubs cargo rustc -p flashopt-candle --features cuda --example cuda_check "$@" \
    -- -C link-arg=-Wl,-z,lazy >&2
echo "$CARGO_TARGET_DIR/$profile/examples/cuda_check"
