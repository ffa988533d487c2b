"""Models run by an Open Inference Protocol (KServe V2) server instead of this process.

``RemoteSession`` answers what ``ImageTower`` and ``TextModel`` ask of an onnxruntime session
(inputs, outputs, the pipeline's metadata, ``run``), so decoding, resizing, tokenizing, pooling
checks and vector text stay exactly where they are; only the graph runs on the server. The
request carries the decoded uint8 image (or the token ids) in V2's binary tensor extension and
the answer comes back as binary FP32: no JSON number lists.

The client is ``http.client`` with keep-alive, not ``tritonclient``: its HTTP client pulls in
gevent and its gRPC client starts threads, neither welcome inside a backend. It starts no thread;
the worker's threads each get their own connection. The worker may also speak gRPC
(``client/inference_grpc.py``): any ``Transport`` serves a ``RemoteSession``.

Identity (the served model is the stored one): V2 model name = the model's name (a text tower:
``NAME.text``), version = the model's generation, and before first use and after every new
connection the model's config must carry ``pg_imgembed.sha256`` equal to the stored sha256 and
``pg_imgembed.version`` equal to the generation asked for (``pg-imgembed serve`` and
``pg-imgembed models export --triton`` write both). Anything else is ``ServedModelMismatch``.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import numpy as np

from ..errors import InferenceFailed, InferenceServerUnavailable, InvalidSetting, ServedModelMismatch

SHA256_PARAMETER = "pg_imgembed.sha256"
VERSION_PARAMETER = "pg_imgembed.version"
TEXT_SUFFIX = ".text"  # a text tower's V2 name: it shares its model's name with the image tower

# V2 datatypes <-> onnxruntime's type names and numpy
V2_TYPES = {"UINT8": "tensor(uint8)", "FP32": "tensor(float)", "FP16": "tensor(float16)", "FP64": "tensor(double)",
            "INT64": "tensor(int64)", "INT32": "tensor(int32)"}
NUMPY_TYPES = {"UINT8": np.uint8, "FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
V2_OF_NUMPY = {np.dtype(t): name for name, t in NUMPY_TYPES.items()}


class Transport(Protocol):
    """One V2 server as a ``RemoteSession`` uses it. ``connections`` counts the connections made,
    so a session knows when to check the served model again."""

    url: str
    connections: int

    def model_metadata(self, name: str, version: int) -> tuple[dict[str, Any] | None, str]:
        """V2's model metadata (``inputs``/``outputs`` of name, datatype, shape), or None and why."""

    def model_parameters(self, name: str, version: int) -> dict[str, str]:
        """The string parameters of the model's config ({} where it has none or no config)."""

    def infer(self, name: str, version: int, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        """The outputs; ``InferenceFailed`` with the server's error text when it refused."""

    def close(self) -> None: ...


class V2Client:
    """Keep-alive HTTP/1.1 (V2's REST binding, binary tensor extension) to one V2 server."""

    def __init__(self, url: str, token_file: str = "", timeout_ms: int = 30_000) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSetting(f"the inference server must be an http:// or https:// URL, not {url!r}",
                                 hint="Backends speak V2 over HTTP (every V2 server serves it, Triton on :8000); "
                                 "grpc:// is for workers (pg-imgembed worker --inference-server grpc://HOST:8001).")
        self.url = url.rstrip("/")
        self.base = parts.path.rstrip("/")
        self.host, self.port, self.https = parts.hostname, parts.port, parts.scheme == "https"
        self.timeout_s = timeout_ms / 1000
        self.headers = {"Authorization": f"Bearer {read_token(token_file)}"} if token_file else {}
        self.connections = 0
        self._local = threading.local()
        self._count = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        with self._count:
            self.connections += 1
        if self.https:  # the system's CAs, host name checked
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=ssl.create_default_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
        retried = False
        while True:
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = conn is not None
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                conn.request(method, self.base + path, body=body, headers={**self.headers, **(headers or {})})
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and not retried:  # the server closed an idle keep-alive connection: once more on a new one
                    retried = True
                    continue
                raise self.unavailable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self.unavailable(exc) from None
            if response.will_close:
                self.close()
            return response.status, response, data

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def unavailable(self, exc: BaseException) -> InferenceServerUnavailable:
        why = (f"did not answer within {self.timeout_s * 1000:.0f} ms" if isinstance(exc, TimeoutError)
               else f"cannot be reached ({exc or type(exc).__name__})")
        return InferenceServerUnavailable(
            f"inference server {self.url} {why}",
            hint="Check that the server runs (pg-imgembed serve, or Triton) and answers at that URL; "
            "imgembed.inference_timeout_ms bounds each request. Nothing was written.")

    def get_json(self, path: str) -> tuple[int, dict[str, Any]]:
        status, _, data = self.request("GET", path)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {"error": data[:200].decode("utf-8", "replace")}


    def model_metadata(self, name: str, version: int) -> tuple[dict[str, Any] | None, str]:
        status, metadata = self.get_json(_model_path(name, version))
        return (metadata, "") if status == 200 else (None, str(metadata.get("error", status)))

    def model_parameters(self, name: str, version: int) -> dict[str, str]:
        status, config = self.get_json(_model_path(name, version) + "/config")
        return {k: v.get("string_value") for k, v in (config.get("parameters") or {}).items()} if status == 200 else {}

    def infer(self, name: str, version: int, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(a) for a in feeds.values()]
        header = json.dumps({
            "inputs": [{"name": n, "shape": list(a.shape), "datatype": V2_OF_NUMPY[a.dtype],
                        "parameters": {"binary_data_size": a.nbytes}} for n, a in zip(feeds, arrays)],
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in output_names],
        }).encode()
        status, response, data = self.request(
            "POST", _model_path(name, version) + "/infer", b"".join([header, *(a.tobytes() for a in arrays)]),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
        if status != 200:
            raise InferenceFailed(_error_text(data))
        return _outputs(response, data, output_names)


def _model_path(name: str, version: int) -> str:
    return f"/v2/models/{quote(name, safe='')}/versions/{version}"


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise InvalidSetting(f"cannot read the bearer token file {path} (imgembed.inference_token_file): {exc.strerror}") from None


@dataclass(frozen=True)
class Arg:
    """An input or output as onnxruntime describes it (``NodeArg``): dynamic dimensions are None."""

    name: str
    type: str
    shape: list[int | None]


@dataclass(frozen=True)
class Metadata:
    custom_metadata_map: dict[str, str]


class RemoteSession:
    """The stored model ``name`` (generation ``version``, bytes ``sha256``) run by a V2 server."""

    def __init__(self, client: Transport, name: str, version: int, sha256: str) -> None:
        self.client, self.name, self.version, self.sha256 = client, name, version, sha256
        self._checked_at = -1
        self.check()

    def check(self) -> None:
        """Is the served model the stored one? Reads its metadata and config (again)."""
        metadata, why = self.client.model_metadata(self.name, self.version)
        if metadata is None:
            raise self.mismatch(f"it has no version {self.version} of it ready ({why})")
        parameters = self.client.model_parameters(self.name, self.version)
        served, version = parameters.get(SHA256_PARAMETER), parameters.get(VERSION_PARAMETER)
        if served != self.sha256 or version != str(self.version):
            raise self.mismatch(f"it serves sha256 {served or '(none in its config)'}, version {version or '(none)'}")
        self.inputs = [_arg(a) for a in metadata.get("inputs", [])]
        self.outputs = [_arg(a) for a in metadata.get("outputs", [])]
        self.metadata = Metadata({k: v for k, v in parameters.items() if k.startswith("pg_imgembed.") and v is not None})
        self._checked_at = self.client.connections

    def mismatch(self, why: str) -> ServedModelMismatch:
        return ServedModelMismatch(
            f'inference server {self.client.url} does not serve model "{self.name}" as stored '
            f"(sha256 {self.sha256}, generation {self.version}): {why}",
            hint="pg-imgembed serve loads the stored model (a replaced model within seconds); a Triton repository "
            "is written by pg-imgembed models export NAME DIR --triton. Vectors are never computed by another model.")

    # what ImageTower and TextModel use of an onnxruntime InferenceSession

    def get_inputs(self) -> list[Arg]:
        return self.inputs

    def get_outputs(self) -> list[Arg]:
        return self.outputs

    def get_modelmeta(self) -> Metadata:
        return self.metadata

    def get_providers(self) -> list[str]:
        return [self.client.url]

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.client.connections != self._checked_at:
            self.check()  # a new connection may reach another server (a restart, a load balancer)
        try:
            outputs = self.client.infer(self.name, self.version, feeds, output_names)
        except InferenceFailed as exc:
            self.check()  # a replaced or unloaded model says so; anything else is the server's error
            raise InferenceFailed(f"inference server {self.client.url} failed on model \"{self.name}\": {exc.message}") from None
        if self.client.connections != self._checked_at:
            self.check()  # answered on a new connection: the model it ran must be checked before its vectors count
        return outputs


def _arg(spec: dict[str, Any]) -> Arg:
    return Arg(spec["name"], V2_TYPES.get(spec["datatype"], spec["datatype"]), [d if d >= 0 else None for d in spec["shape"]])


def _error_text(data: bytes) -> str:
    try:
        return str(json.loads(data).get("error", data[:200]))
    except ValueError:
        return data[:200].decode("utf-8", "replace")


def _outputs(response: http.client.HTTPResponse, data: bytes, names: list[str]) -> list[np.ndarray]:
    length = int(response.getheader("Inference-Header-Content-Length") or len(data))
    header = json.loads(data[:length])
    offset, found = length, {}
    for out in header["outputs"]:
        dtype, shape = NUMPY_TYPES[out["datatype"]], out["shape"]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:  # a server that ignored binary_data: JSON numbers
            found[out["name"]] = np.asarray(out["data"], dtype=dtype).reshape(shape)
            continue
        found[out["name"]] = np.frombuffer(data, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape)
        offset += size
    return [found[name] for name in names]
