"""What each runtime supports, in one table that schema, preflight, inspect, vela and firmware read.

A new runtime or NPU is a new row here, not a new check in every module.
"""

from __future__ import annotations

import re

# The host runner that validates each runtime's artifacts.
RUNNER_FOR_RUNTIME = {"litert": ("litert-host",), "tflm": ("tflm-host",)}

# Conversion modes each runtime has kernels for.
PRECISION_FOR_RUNTIME = {
    "litert": ("int8", "dynamic", "float16", "float32"),
    "tflm": ("int8", "float32"),  # no float16 or hybrid (dynamic-range) kernels
}

# Why a sparsity structure pays off or not on a runtime that does not list it as exploitable.
SPARSITY_WHY_NOT = {
    "unstructured": "zeros scattered through the weights are stored and computed like any other weight",
    "2:4": "its kernels have no 2:4 sparse path, so the zeros are stored and computed",
    "channel": "nothing: removing channels makes every tensor smaller",
}

# Custom ops the host build of TFLM registers (its AllOpsResolver); any other custom op is missing.
TFLM_CUSTOM_OPS = ("TFLite_Detection_PostProcess",)

# The custom op Vela puts the Ethos-U command stream in; a target's TFLM has it when the
# profile has an [npu] table (TFLM built with the Ethos-U driver).
NPU_OP = "ethos-u"
NPU_CUSTOM_OPS = (NPU_OP,)

# How TFLM says it has no kernel for an op.
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")


def missing_ops(message: str) -> list[str]:
    """The builtin ops a TFLM error message says it has no kernel for, sorted, without repeats."""
    return sorted(set(_MISSING_OP.findall(message)))
