#!/usr/bin/env bash
# Run a command as on an AVX2-only x86-64 CPU: CPUID hides AVX-512, AMX and AVX-VNNI from it and its children,
# so onnxruntime, oneDNN, MKL and torch all pick their AVX2 kernels (tools/cpu_mask/hide_cpu_features.c).
# Needs gcc and a CPU/kernel with CPUID faulting ("cpuid_fault" in /proc/cpuinfo; exit 3 without it).
#
#   tools/as_avx2.sh python tools/bench.py --model v2.onnx --wav_dir clips --rounds 2 --runs 1
#   tools/as_avx2.sh python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'   # AVX2
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 COMMAND [ARG...]" >&2
  exit 2
fi
if ! grep -qw cpuid_fault /proc/cpuinfo 2>/dev/null; then
  echo "$0: this CPU or kernel has no CPUID faulting (no cpuid_fault in /proc/cpuinfo): cannot hide features" >&2
  exit 3
fi
build=$(mktemp -d "${TMPDIR:-/tmp}/as_avx2.XXXXXX")
trap 'rm -rf "$build"' EXIT
gcc -O2 -Wall -shared -fPIC -o "$build/hide_cpu_features.so" "$(dirname "$0")/cpu_mask/hide_cpu_features.c" -ldl
# glibc picked its string functions before the library loads: tell it too
hidden=AVX512F,AVX512CD,AVX512BW,AVX512DQ,AVX512VL,AVX512_VNNI,AVX512_BF16,AVX512_FP16,AMX_BF16,AMX_TILE,AMX_INT8
export GLIBC_TUNABLES="glibc.cpu.hwcaps=-${hidden//,/,-}${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}"
export S3TOK_HIDDEN_CPU_FEATURES="AVX-512,AMX,AVX-VNNI"
export LD_PRELOAD="$build/hide_cpu_features.so${LD_PRELOAD:+:$LD_PRELOAD}"
"$@"  # not exec: the trap removes the library afterwards
