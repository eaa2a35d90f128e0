#!/usr/bin/env python3
"""Count the SASS instructions a unit of the fused step issues, without a GPU.

Compiles a kernel emitted by `flashopt emit` with NVRTC (wheel `nvidia-cuda-nvrtc-cu12`,
headers from `nvidia-cuda-runtime-cu12`) to an sm_90 cubin, disassembles it with
nvdisasm (wheel `nvidia-cuda-nvdisasm`) and counts the instructions of the kernel's
fast path: everything in the kernel function except the blocks that call a division
or square-root slow path (taken only for operands out of the fast path's range) and
the slow-path subroutines themselves. Divided by the unit's elements (`--lanes`, 4 by
default) this is the static cost per element that ncu's warp-instruction count per
element should match when every lane is active.

    python3 -m pip install --target .dev/nvrtc nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 nvidia-cuda-nvdisasm
    python3 scripts/sass_count.py .dev/nvrtc target/release/flashopt adamw --master 24 [--approximate]
"""

import collections
import glob
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from nvrtc_check import nvrtc  # noqa: E402


def cubin(lib, include, source):
    import ctypes

    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    opts = [b"--gpu-architecture=sm_90", b"--std=c++17", f"--include-path={include}".encode()]
    if lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts)):
        raise RuntimeError("NVRTC failed to compile the kernel")
    size = ctypes.c_size_t()
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetCUBIN(prog, buf)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return buf.raw


def fast_path(sass):
    """The kernel function's instructions outside slow-path call blocks."""
    ops, in_kernel, skipping = [], False, False
    for line in sass.splitlines():
        if line.startswith(".text.") and "__internal" not in line:
            in_kernel = True
            continue
        if "__internal" in line and line.rstrip().endswith(":"):
            in_kernel = False
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if not (in_kernel and m):
            continue
        inst = m.group(1)
        if skipping:
            # A slow-path block ends where the fast path joins again.
            if inst.startswith("BSYNC") or inst.startswith("BRA "):
                skipping = False
                if inst.startswith("BSYNC"):
                    ops.append(inst)
            continue
        if re.match(r"@!?P\d BRA", inst):
            skipping = True
        ops.append(inst)
    return ops


def main():
    site, flashopt, *emit_args = sys.argv[1:]
    lanes = 4
    if "--lanes" in emit_args:
        lanes = int(emit_args[emit_args.index("--lanes") + 1])
    source = subprocess.run(
        [flashopt, "emit", *emit_args, "--target", "cuda"], check=True, capture_output=True, text=True
    ).stdout
    lib, include = nvrtc(site)
    nvdisasm = glob.glob(os.path.join(site, "nvidia", "*", "bin", "nvdisasm"))[0]
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin(lib, include, source))
        f.flush()
        sass = subprocess.run([nvdisasm, "-c", f.name], check=True, capture_output=True, text=True).stdout
    ops = fast_path(sass)
    kinds = collections.Counter(re.sub(r"^@!?U?P\w+ ", "", op).split()[0].split(".")[0] for op in ops)
    print(f"{' '.join(emit_args)}: {len(ops)} SASS instructions per unit, {len(ops) / lanes:.1f} per element")
    print("  " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))


if __name__ == "__main__":
    main()
