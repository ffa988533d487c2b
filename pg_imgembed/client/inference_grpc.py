"""The worker's V2 client over gRPC (``grpc://HOST:PORT``, ``grpcs://`` with the system's CAs).

KServe V2's ``GRPCInferenceService`` with raw tensor contents (the uint8 image or token ids out,
FP32 back, no number lists), through ``grpcio`` and the protobuf messages ``tritonclient`` ships
(``pg_imgembed[grpc]``). Only the worker uses it: grpcio runs threads of its own, which a backend
does not get (backends speak HTTP, ``inference_server.py``). One channel serves every worker
thread; each time it (re)connects, ``connections`` grows, so sessions check the served model again.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import InferenceFailed, InferenceServerUnavailable, InvalidSetting
from ..serving.inference_server import NUMPY_TYPES, V2_OF_NUMPY, V2Client, read_token

# Transport failures: the server is away or slow, not a refusal of this request.
_UNAVAILABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN")


class GrpcV2Client:
    def __init__(self, url: str, token_file: str = "", timeout_ms: int = 30_000) -> None:
        try:
            import grpc
            from tritonclient.grpc import service_pb2, service_pb2_grpc
        except ImportError:
            raise InvalidSetting(f"the inference server {url} needs gRPC, which this install lacks",
                                 hint="pip install 'pg_imgembed[grpc]', or use the server's http:// URL.") from None
        parts = urlsplit(url)
        if not parts.hostname:
            raise InvalidSetting(f"the inference server must be a grpc://HOST:PORT URL, not {url!r}")
        self.url, self.timeout_s, self._grpc, self._pb = url.rstrip("/"), timeout_ms / 1000, grpc, service_pb2
        target = f"{parts.hostname}:{parts.port or 8001}"
        unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(), unlimited) if parts.scheme == "grpcs"
                         else grpc.insecure_channel(target, unlimited))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {read_token(token_file)}"),) if token_file else ()
        self.connections = 0
        self._count = threading.Lock()
        self._channel.subscribe(self._changed)

    def _changed(self, state: Any) -> None:
        if state == self._grpc.ChannelConnectivity.READY:
            with self._count:
                self.connections += 1

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s, metadata=self._metadata)
        except self._grpc.RpcError as exc:
            code = exc.code().name
            if code in _UNAVAILABLE:
                why = (f"did not answer within {self.timeout_s * 1000:.0f} ms" if code == "DEADLINE_EXCEEDED"
                       else f"cannot be reached ({exc.details()})")
                raise InferenceServerUnavailable(f"inference server {self.url} {why}",
                                                 hint="Check that the server runs and answers gRPC at that address.") from None
            raise InferenceFailed(exc.details() or code) from None

    def model_metadata(self, name: str, version: int) -> tuple[dict[str, Any] | None, str]:
        try:
            answer = self._call("ModelMetadata", self._pb.ModelMetadataRequest(name=name, version=str(version)))
        except InferenceFailed as exc:
            return None, exc.message
        tensors = [[{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in kind]
                   for kind in (answer.inputs, answer.outputs)]
        return {"inputs": tensors[0], "outputs": tensors[1]}, ""

    def model_parameters(self, name: str, version: int) -> dict[str, str]:
        try:
            answer = self._call("ModelConfig", self._pb.ModelConfigRequest(name=name, version=str(version)))
        except InferenceFailed:
            return {}
        return {k: v.string_value for k, v in answer.config.parameters.items()}

    def infer(self, name: str, version: int, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        arrays = {n: np.ascontiguousarray(a) for n, a in feeds.items()}
        pb = self._pb
        request = pb.ModelInferRequest(
            model_name=name, model_version=str(version),
            inputs=[pb.ModelInferRequest.InferInputTensor(name=n, datatype=V2_OF_NUMPY[a.dtype], shape=list(a.shape))
                    for n, a in arrays.items()],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in output_names],
            raw_input_contents=[a.tobytes() for a in arrays.values()])
        answer = self._call("ModelInfer", request)
        found = {out.name: np.frombuffer(raw, dtype=NUMPY_TYPES[out.datatype]).reshape(list(out.shape))
                 for out, raw in zip(answer.outputs, answer.raw_output_contents)}
        return [found[n] for n in output_names]

    def close(self) -> None:
        self._channel.unsubscribe(self._changed)
        self._channel.close()


def connect(url: str, token_file: str = "", timeout_ms: int = 30_000) -> V2Client | GrpcV2Client:
    """The worker's client for ``url``: gRPC for grpc:// and grpcs://, else HTTP."""
    if urlsplit(url).scheme in ("grpc", "grpcs"):
        return GrpcV2Client(url, token_file, timeout_ms)
    return V2Client(url, token_file, timeout_ms)
