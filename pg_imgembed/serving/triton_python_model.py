"""The ``model.py`` of every model ``pg-imgembed serve`` puts in Triton's Python backend.

It runs in Triton's Python stub (the tritonserver venv: its own numpy), never in a backend or the
CLI. The session is made by pg_imgembed's own ``make_session`` (same options, same external-data
check), from the version's ``model.onnx``, whose sha256 must be the one its config carries.
Requests of equal shapes that the dynamic batcher gathered run as one onnxruntime call.

Tensors cross the stub by DLPack where ``as_numpy()`` and ``Tensor(name, array)`` would read
numpy's C structures as the stub was compiled (numpy 1), which numpy 2 laid out anew (wrong input
bytes, outputs refused): inputs always, outputs under numpy 2. Under numpy 1 an output must not
go by DLPack: numpy 1's capsule destructor rejects the consumed capsule and the stub hangs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_NUMPY_2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def _output_tensor(name: str, array: np.ndarray) -> Any:
    return pb_utils.Tensor.from_dlpack(name, array) if _NUMPY_2 else pb_utils.Tensor(name, array)  # the stub adds Tensor late


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
        sys.path.insert(0, parameters["pg_imgembed.package_path"])
        from pg_imgembed.onnx.session import make_session

        with open(os.path.join(args["model_repository"], args["model_version"], "model.onnx"), "rb") as f:
            onnx = f.read()
        if hashlib.sha256(onnx).hexdigest() != parameters["pg_imgembed.sha256"]:
            raise pb_utils.TritonModelException(f"model.onnx of {args['model_name']} is not the bytes its config names")
        self.session = make_session(onnx, int(parameters["pg_imgembed.threads"]), parameters["pg_imgembed.provider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [{name: np.from_dlpack(pb_utils.get_input_tensor_by_name(r, name)) for name in self.inputs} for r in requests]
        groups: dict[tuple, list[int]] = {}
        for i, feed in enumerate(feeds):
            groups.setdefault(tuple(feed[name].shape[1:] for name in self.inputs), []).append(i)
        responses: list[Any] = [None] * len(requests)
        for members in groups.values():
            try:
                batch = {name: np.concatenate([feeds[i][name] for i in members]) for name in self.inputs}
                results = self.session.run(self.outputs, batch)
            except Exception as exc:  # onnxruntime's own types: the callers get its first line
                error = pb_utils.TritonError(str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__)
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
                continue
            start = 0
            for i in members:
                rows = len(feeds[i][self.inputs[0]])
                responses[i] = pb_utils.InferenceResponse(
                    [_output_tensor(name, np.ascontiguousarray(out[start:start + rows])) for name, out in zip(self.outputs, results)])
                start += rows
        return responses
