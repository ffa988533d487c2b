"""The tensors of a serialized ONNX model that refer to external data, found without protobuf.

onnxruntime resolves an external tensor's ``location`` against the model's directory, or, for a
model given as bytes, against the process's working directory: in a backend, the data directory.
A model whose weights are ``postgresql.conf`` hands that file's bytes to whoever runs it, so a
model must carry all its tensors (onnx_session.check_self_contained).

The check reads protobuf's wire format directly: importing onnx and protobuf would cost the
embedding path's cold start (tests/test_optimized_graphs.py keeps them out), and tensor bytes
are skipped by their length, never copied. Field numbers are onnx.proto's.
"""

from __future__ import annotations

from collections.abc import Iterator

# message -> {field number: what the field holds}; "tensor" fields are checked, others walked.
_MESSAGES: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # node, initializer, sparse_initializer
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},  # t, g, tensors, graphs
    "sparse": {1: "tensor", 2: "tensor"},  # values, indices
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 8, 13, 14, 1
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_LENGTH_DELIMITED = 2


class Malformed(ValueError):
    """Not protobuf's wire format: onnxruntime will refuse the bytes too, with its own reason."""


def external_tensors(model: bytes) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor that refers to external data, anywhere in the
    model: initializers, sparse initializers, node attributes, subgraphs and functions."""
    found: list[tuple[str, str]] = []

    def walk(message: memoryview, kind: str) -> None:
        holds = _MESSAGES[kind]
        for number, wire, value in _fields(message):
            child = holds.get(number)
            if child is None or wire != _LENGTH_DELIMITED:
                continue
            assert isinstance(value, memoryview)
            if child == "tensor":
                tensor(value)
            else:
                walk(value, child)

    def tensor(message: memoryview) -> None:
        name, location, external = "", "?", False
        for number, _, value in _fields(message):
            if number == _TENSOR_NAME and isinstance(value, memoryview):
                name = bytes(value).decode(errors="replace")
            elif number == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
                external = True
            elif number == _TENSOR_EXTERNAL_DATA and isinstance(value, memoryview):
                external = True
                entry = {n: bytes(v).decode(errors="replace") for n, _, v in _fields(value) if isinstance(v, memoryview)}
                if entry.get(_ENTRY_KEY) == "location":
                    location = entry.get(_ENTRY_VALUE, "?")
        if external:
            found.append((name, location))

    try:
        walk(memoryview(model), "model")
    except RecursionError:
        raise Malformed("graphs nested too deeply") from None
    return found


def _fields(message: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value): a varint's value, a length-delimited field's bytes, 0
    for fixed-size fields and groups, which hold nothing checked here."""
    pos, end = 0, len(message)
    while pos < end:
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            yield number, wire, value
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(message, pos)
            if pos + length > end:
                raise Malformed("a field runs past the end of its message")
            yield number, wire, message[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, wire, 0
        elif wire == 3:  # a group: skipped up to its end (protobuf parsers accept them in unknown fields)
            pos = _skip_group(message, pos, number)
            yield number, wire, 0
        else:
            raise Malformed(f"wire type {wire}")
    if pos > end:
        raise Malformed("a field runs past the end of its message")


def _skip_group(message: memoryview, pos: int, number: int) -> int:
    end = len(message)
    while pos < end:
        key, pos = _varint(message, pos)
        wire = key & 7
        if wire == 4 and key >> 3 == number:
            return pos
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(message, pos)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 3:
            pos = _skip_group(message, pos, key >> 3)
        else:
            raise Malformed(f"wire type {wire}")
    raise Malformed("a group has no end")


def _varint(message: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(message) or shift > 63:
            raise Malformed("a varint runs past the end of its message")
        byte = message[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
