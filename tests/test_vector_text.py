"""vector_to_text: float32 -> pgvector text as fixed-width C99 hex floats, bit-exact. No server."""

from __future__ import annotations

import ctypes
import ctypes.util
import re

import numpy as np
import pytest

from pg_imgembed.vectors import vector_to_text

F32 = np.finfo(np.float32)
ELEMENT = re.compile(r"[+-]0x[01]\.[0-9a-f]{6}p[+-][0-9]{3}")


def elements(text: str) -> list[str]:
    assert text.startswith("[") and text.endswith("]")
    return text[1:-1].split(",")


def parse(text: str) -> np.ndarray:
    return np.array([float.fromhex(e) for e in elements(text)], dtype=np.float32)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


@pytest.mark.parametrize("value, text", [
    (1.0, "+0x1.000000p+000"),
    (-1.0, "-0x1.000000p+000"),
    (0.5, "+0x1.000000p-001"),
    (3.0, "+0x1.800000p+001"),
    (np.float32(np.pi), "+0x1.921fb6p+001"),
    (-np.float32(np.pi), "-0x1.921fb6p+001"),
    (0.1, "+0x1.99999ap-004"),
    (1000.0, "+0x1.f40000p+009"),
    (0.0, "+0x0.000000p-126"),
    (-0.0, "-0x0.000000p-126"),
    (F32.smallest_subnormal, "+0x0.000002p-126"),
    (-F32.smallest_subnormal, "-0x0.000002p-126"),
    (np.uint32(0x007FFFFF).view(np.float32), "+0x0.fffffep-126"),  # largest subnormal
    (F32.smallest_normal, "+0x1.000000p-126"),
    (F32.max, "+0x1.fffffep+127"),
    (F32.min, "-0x1.fffffep+127"),
])
def test_known_values_format_exactly(value, text):
    assert vector_to_text(np.array([value], dtype=np.float32)) == f"[{text}]"


def test_every_element_has_the_same_width_and_shape():
    values = np.array([0.0, -0.0, 1e-45, 1e-40, 1.5e-38, 1.0, -2.5, 123456.78, 3e38], dtype=np.float32)
    parts = elements(vector_to_text(values))
    assert len(parts) == len(values)
    for part in parts:
        assert ELEMENT.fullmatch(part), part
        assert len(part) == 16


@pytest.mark.parametrize("values", [
    np.array([0.0, -0.0], dtype=np.float32),
    np.array([F32.smallest_subnormal, -F32.smallest_subnormal, 1e-40, -3.3e-39], dtype=np.float32),
    np.array([F32.smallest_normal, -F32.smallest_normal, F32.max, F32.min], dtype=np.float32),
    np.array([1e38, -1e38, 65504.0, 16777217.0, -0.333333343], dtype=np.float32),
    np.linspace(-1, 1, 513, dtype=np.float32),
])
def test_round_trip_is_bit_exact_for_edge_values(values):
    back = parse(vector_to_text(values))
    assert same_bits(back, values)


def test_negative_zero_keeps_its_sign():
    back = parse(vector_to_text(np.array([-0.0, 0.0], dtype=np.float32)))
    assert np.signbit(back).tolist() == [True, False]


def test_round_trip_is_bit_exact_for_random_bit_patterns():
    bits = np.random.default_rng(0).integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    assert (np.abs(values) < F32.smallest_normal).any()  # subnormals included
    assert same_bits(parse(vector_to_text(values)), values)


def test_round_trip_of_a_normalised_embedding():
    v = np.random.default_rng(1).normal(size=2048).astype(np.float32)
    v /= np.linalg.norm(v)
    assert same_bits(parse(vector_to_text(v)), v)


def test_values_match_python_float_hex():
    values = np.random.default_rng(2).normal(scale=1e3, size=100).astype(np.float32)
    for part, value in zip(elements(vector_to_text(values)), values):
        assert float.fromhex(part) == float.fromhex(float(value).hex())


def _libc_strtof():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    strtof = ctypes.CDLL(name).strtof
    strtof.restype = ctypes.c_float
    strtof.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)]
    return strtof


def test_c_strtof_reads_every_element_back_exactly():
    """pgvector parses each element with strtof: check with the real C parser."""
    strtof = _libc_strtof()
    if strtof is None:
        pytest.skip("no C library to load strtof from")
    values = np.concatenate([
        np.array([0.0, -0.0, F32.smallest_subnormal, -1e-40, F32.smallest_normal, F32.max, F32.min], np.float32),
        np.random.default_rng(3).normal(size=500).astype(np.float32),
    ])
    parsed = []
    for part in elements(vector_to_text(values)):
        raw = part.encode("ascii")
        end = ctypes.c_char_p()
        parsed.append(strtof(raw, ctypes.byref(end)))
        assert end.value == b""  # the whole element was consumed
    assert same_bits(np.array(parsed, dtype=np.float32), values)


def test_float64_input_is_rounded_to_float32_first():
    values = np.array([0.1, 1 / 3, 1e-40], dtype=np.float64)
    assert same_bits(parse(vector_to_text(values)), values.astype(np.float32))


def test_non_contiguous_multi_dimensional_and_big_endian_input():
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    assert same_bits(parse(vector_to_text(values)), values.reshape(-1))
    assert same_bits(parse(vector_to_text(values[:, ::2])), values[:, ::2].reshape(-1))
    big_endian = values.reshape(-1).astype(">f4")
    assert vector_to_text(big_endian) == vector_to_text(values.reshape(-1))


def test_single_element_has_no_separator_and_empty_input_gives_empty_brackets():
    assert vector_to_text(np.array([2.0], dtype=np.float32)) == "[+0x1.000000p+001]"
    assert vector_to_text(np.array([], dtype=np.float32)) == "[]"
    assert vector_to_text(np.array([1.0, 2.0], dtype=np.float32)) == "[+0x1.000000p+000,+0x1.000000p+001]"


def test_output_is_plain_ascii_without_spaces():
    text = vector_to_text(np.random.default_rng(4).normal(size=64).astype(np.float32))
    assert text.isascii() and " " not in text
    assert text.count(",") == 63
