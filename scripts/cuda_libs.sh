#!/usr/bin/env bash
# On a GPU machine: a folder of links to the machine's CUDA 13 libraries under the
# sonames a binary built by scripts/candle_cuda_build.sh asks for (it was linked against
# stubs), for its LD_LIBRARY_PATH. Prints each soname and what it links to; prints the
# folder last. A soname the machine lacks is reported MISSING (the binary fails only if
# it calls into it).
#
#   LD_LIBRARY_PATH=$(scripts/cuda_libs.sh /tmp/cudalibs | tail -1) cuda_check 5
#
# With sonames after DIR, only those (cuBLAS alone for flashopt's matrix stage:
# `scripts/cuda_libs.sh /tmp/cublas libcublas.so.13 libcublasLt.so.13`).
set -uo pipefail
dir=${1:?usage: $0 DIR [SONAME...]}
shift
names=("$@")
(( ${#names[@]} )) || names=(libcublas.so.13 libcublasLt.so.13 libnvrtc.so.13 libcurand.so.10 libcudart.so.13)
mkdir -p "$dir"
for n in "${names[@]}"; do
  f=$(find /opt /usr/local /usr/lib -name "$n*" 2>/dev/null | grep -v stubs | head -1)
  echo "$n -> ${f:-MISSING}"
  [ -n "$f" ] && ln -sf "$f" "$dir/$n"
done
echo "$dir"
