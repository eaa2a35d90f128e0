#!/usr/bin/env python3
"""Compile the generated CUDA kernels with NVRTC, without a GPU.

NVRTC (the run-time compiler cubecl-cuda uses on the device) is a plain library: this
script loads it from the `nvidia-cuda-nvrtc-cu12` wheel (headers from
`nvidia-cuda-runtime-cu12`), compiles the kernel of every shipped optimizer that has
one (and the reduction phases' kernels of those that reduce over a tensor, a row or
a column) in every master mode
and parameter dtype for sm_90 (Hopper) through `flashopt emit`, and fails
on any compile error or register spill. It prints each kernel's registers.

    python3 -m pip install --target .dev/nvrtc nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12
    python3 scripts/nvrtc_check.py .dev/nvrtc target/debug/flashopt
"""

import ctypes
import os
import re
import subprocess
import sys

OPTIMIZERS = [
    "adamw", "adam", "lion", "sgd", "sgdw", "lamb", "cautious_adamw", "adam_mini",
    "adafactor", "adafactor_momentum", "muon",
]
# The optimizers with phases (reductions, matrix functions): their phase kernels too.
PHASES = {
    "lamb": 1, "cautious_adamw": 1, "adam_mini": 1, "adafactor": 3, "adafactor_momentum": 3,
    "muon": 1,
}
CONFIGS = [
    ["--master", "24"],
    ["--master", "32"],
    ["--master", "none"],
    ["--param", "f16", "--master", "24"],
    ["--param", "f16", "--grad", "f32", "--master", "32"],
    ["--param", "f32", "--master", "none"],
    # The opt-in approximate divisions and square roots (`Arithmetic::Approximate`).
    ["--master", "24", "--approximate"],
    # Gradients read from several buffers per launch (steps in place).
    ["--master", "24", "--gradient-regions", "8"],
]


def nvrtc(site):
    lib = ctypes.CDLL(os.path.join(site, "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"))
    include = os.path.join(site, "nvidia/cuda_runtime/include")
    return lib, include


def compile_source(lib, include, source, arch="sm_90"):
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None):
        raise RuntimeError("nvrtcCreateProgram failed")
    opts = [
        f"--gpu-architecture={arch}".encode(),
        b"--std=c++17",
        f"--include-path={include}".encode(),
        b"-Xptxas",
        b"-v",
    ]
    status = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return status, log.value.decode(errors="replace")


def emitted(flashopt, name, config):
    args = [flashopt, "emit", name, "--target", "cuda", *config]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def main():
    site, flashopt = sys.argv[1], sys.argv[2]
    lib, include = nvrtc(site)
    # (label, source): every step kernel, every reduction phase's kernel, and the
    # kernels that sum each reduction over each tensor (one source per kernel).
    kernels = [
        (f"{name} {' '.join(config)}", emitted(flashopt, name, config))
        for name in OPTIMIZERS
        for config in CONFIGS
    ]
    for name, phases in PHASES.items():
        for p in range(phases):
            for config in CONFIGS:
                config = config + ["--phase", str(p)]
                kernels.append((f"{name} {' '.join(config)}", emitted(flashopt, name, config)))
        pieces = emitted(flashopt, name, ["--reduction-kernels"]).split("// flashopt kernel\n")
        kernels += [
            (f"{name} --reduction-kernels #{k}", piece)
            for k, piece in enumerate(p for p in pieces if p.strip())
        ]
    failed = False
    for label, source in kernels:
        status, log = compile_source(lib, include, source)
        regs = re.search(r"Used (\d+) registers", log)
        spills = re.findall(r"(\d+) bytes spill (?:stores|loads)", log)
        spilled = any(int(s) for s in spills)
        if status or spilled or not regs:
            failed = True
            errors = "\n".join(l for l in log.splitlines() if "error" in l or "spill" in l)
            print(f"FAIL {label}: status {status}\n{errors}")
        else:
            print(f"ok   {label}: {regs.group(1)} registers, no spills")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
