"""The Triton DCN compiled for every GPU generation we expect, in each precision, down to the
binary, without a GPU; and its shared memory against each one's limit per block, which a
compile does not check (a launch past it fails with OutOfResources on that GPU only).

Slow (about 100 s per fp32 compile on a 2-core machine): marked `slow`, left out of the README's
test command, and run by .ci/run after the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

# Shared memory a block may use, opted in (CUDA C Programming Guide, "Technical Specifications
# per Compute Capability"): A100 163 KB, RTX 30xx/A10 and RTX 40xx/L4 99 KB, H100 227 KB.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("capability", sorted(SHARED_LIMIT))
def test_the_kernel_compiles_and_fits(tmp_path, capability, dtype):
    script = (
        "import torch\n"
        "from vsrpp_cli.network.deform_conv_triton import compile_for_gpu\n"
        f"compiled = compile_for_gpu({capability}, torch.{dtype})\n"
        f"assert compiled.asm['cubin'] and '.target sm_{capability}' in compiled.asm['ptx']\n"
        "print(compiled.metadata.shared)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cached one
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    shared = int(result.stdout.split()[-1])
    assert 0 < shared <= SHARED_LIMIT[capability], f"sm_{capability} {dtype}: {shared} bytes of shared memory"
