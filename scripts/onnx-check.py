#!/usr/bin/env python3
"""Check Cohort ONNX exports with the official checker.

Usage: onnx-check.py MODEL.onnx...

For each file: onnx.checker.check_model(model, full_check=True) (which also runs strict
shape inference), then checks the opset, and prints one JSON line per model with the
opset, the IR version, the graph's input/output shapes and the metadata keys. Exits 1 on
the first failure with the reason on stderr.
"""
import json
import sys

import onnx


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.dim_param else d.dim_value for d in shape.dim]


def main(paths):
    if not paths:
        print("usage: onnx-check.py MODEL.onnx...", file=sys.stderr)
        return 2
    for path in paths:
        try:
            model = onnx.load(path)
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # the checker raises several exception types
            print(f"{path}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        print(json.dumps({
            "path": path,
            "onnx": onnx.__version__,
            "ir_version": model.ir_version,
            "opset": opsets,
            "inputs": {i.name: dims(i) for i in model.graph.input},
            "outputs": {o.name: dims(o) for o in model.graph.output},
            "metadata": sorted(p.key for p in model.metadata_props),
            "nodes": len(model.graph.node),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
