#!/usr/bin/env python3
"""The ONNX oracle for Opacity's exporter: onnx's checker and ONNX Runtime.

Usage:
  onnx_check.py check MANIFEST.json RESULTS.json
      For every case of the manifest: onnx.checker.check_model on the file, then ONNX
      Runtime (CPU, 2 threads) on the case's input; writes per-output errors against the
      expected arrays and, for post-processed graphs, the boxes ONNX Runtime found.
  onnx_check.py bench MODEL.onnx SIZE BATCH RUNS
      Median wall time of ONNX Runtime (CPU, $OPACITY_ORT_THREADS or 2 intra-op threads) on a [BATCH, 1, SIZE, SIZE]
      input after two warm-up runs; prints one JSON line.

Manifest: {"cases": [{"name": str, "model": path, "input": path, "input_shape": [N, 1, H, W],
           "expected": {output_name: {"file": path, "shape": [...]}}}]}
Arrays are raw little-endian float32. Run from the virtual environment that
scripts/onnx-venv.sh makes (onnx, onnxruntime, numpy).
"""
import json
import os
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("OPACITY_ORT_THREADS", "2"))
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check(manifest_path, results_path):
    manifest = json.load(open(manifest_path))
    results = []
    for case in manifest["cases"]:
        r = {"name": case["name"]}
        try:
            onnx.checker.check_model(case["model"], full_check=True)
            r["checker"] = "ok"
        except Exception as e:  # the checker's message is the result
            r["checker"] = f"{type(e).__name__}: {e}"
        model = onnx.load(case["model"], load_external_data=False)
        r["ir_version"] = model.ir_version
        r["opsets"] = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        r["metadata"] = {p.key: p.value for p in model.metadata_props}
        r["inputs"] = [[i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]] for i in model.graph.input]
        try:
            s = session(case["model"])
            x = np.fromfile(case["input"], dtype="<f4").reshape(case["input_shape"])
            names = [o.name for o in s.get_outputs()]
            outs = dict(zip(names, s.run(None, {"images": x})))
            r["outputs"] = {n: list(v.shape) for n, v in outs.items()}
            errors = {}
            for name, exp in case.get("expected", {}).items():
                ref = np.fromfile(exp["file"], dtype="<f4").reshape(exp["shape"])
                got = outs[name].astype(np.float32)
                if list(got.shape) != list(ref.shape):
                    errors[name] = {"shape": list(got.shape), "expected_shape": list(ref.shape)}
                    continue
                diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
                scale = float(np.max(np.abs(ref))) if ref.size else 0.0
                errors[name] = {"max_abs_diff": diff, "max_abs": scale, "relative": diff / max(scale, 1e-30)}
            r["errors"] = errors
            if "boxes" in outs:
                r["detections"] = {"boxes": outs["boxes"].astype(float).tolist(),
                                   "scores": outs["scores"].astype(float).tolist(),
                                   "batch_index": outs["batch_index"].astype(int).tolist()}
        except Exception as e:
            r["runtime_error"] = f"{type(e).__name__}: {e}"
        results.append(r)
    json.dump({"onnx": onnx.__version__, "onnxruntime": ort.__version__, "results": results}, open(results_path, "w"))


def bench(path, size, batch, runs):
    s = session(path)
    x = np.random.default_rng(0).random((batch, 1, size, size), dtype=np.float32)
    for _ in range(2):
        s.run(None, {"images": x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        s.run(None, {"images": x})
        times.append(time.perf_counter() - t0)
    print(json.dumps({"onnxruntime": ort.__version__, "median_ms": 1000 * statistics.median(times),
                      "min_ms": 1000 * min(times), "runs": runs, "batch": batch, "size": size}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 6 and sys.argv[1] == "bench":
        bench(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
