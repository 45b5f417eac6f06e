#!/usr/bin/env python3
"""Writes dtypes.safetensors with Python's safetensors + torch, so the Go
reader is checked against the reference writer for every dtype it reads, and
the Go F16/BF16 rounding against PyTorch's.

    python3 trainer/model/safetensors/testdata/gen_dtypes.py trainer/model/safetensors/testdata

Tensors: "x" (F32) holds values chosen to hit rounding ties, subnormals,
overflow and signed zeros plus random values; "x.bf16"/"x.f16" are
x.bfloat16()/x.half() and "x.bf16.up"/"x.f16.up" the same widened back to F32;
"x.f64" is x.double(); "ids.i64"/"ids.i32" are token ids; "scalar" has shape
[] and "empty" shape [0, 3]; "cube" is a [2, 3, 4] F32 arange.
"""
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
g = torch.Generator().manual_seed(7)
special = [
    0.0, -0.0, 1.0, -1.0,
    1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8),        # BF16 ties
    1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20,  # F16 ties, just above a tie
    2**-24, 2**-25, 3 * 2**-25, 2**-25 + 2**-40,     # F16 subnormals and ties
    2**-14, 2**-14 - 2**-25, 6e-8, 1e-10,
    65504.0, 65519.0, 65520.0, 1e6, -1e6, 3.0e38,    # F16 overflow, BF16 overflow
    float("inf"), float("-inf"), float("nan"),
]
x = torch.cat([
    torch.tensor(special, dtype=torch.float32),
    torch.randn(64, generator=g) * 0.1,
    torch.randn(64, generator=g) * 100,
    torch.randn(32, generator=g) * 1e-5,
])
ids = torch.randint(0, 32000, (2, 12), generator=g)
tensors = {
    "x": x,
    "x.bf16": x.bfloat16(),
    "x.f16": x.half(),
    "x.bf16.up": x.bfloat16().float(),
    "x.f16.up": x.half().float(),
    "x.f64": x.double(),
    "ids.i64": ids.to(torch.int64),
    "ids.i32": ids.to(torch.int32),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
    "cube": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
}
save_file(tensors, os.path.join(out, "dtypes.safetensors"), metadata={"writer": "gen_dtypes.py"})
print(f"wrote {os.path.join(out, 'dtypes.safetensors')} ({x.numel()} values)")
