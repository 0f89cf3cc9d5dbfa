"""Embedding vectors as the OpenAI API carries them. Pure.

penny stores a job's vectors as little-endian float32, back to back: the very bytes the
API's `encoding_format: "base64"` sends (the SDK decodes them with
`numpy.frombuffer(..., dtype="float32")`). The `float` format is the same values as JSON
numbers, each written with the fewest digits that still read back as the same float32.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence

FLOAT32_BYTES = 4


def pack_vectors(vectors: Sequence[Sequence[float]]) -> bytes:
    """Vectors of equal length -> little-endian float32 bytes, row after row."""
    values = [value for vector in vectors for value in vector]
    return struct.pack(f"<{len(values)}f", *values)


def split_vectors(data: bytes, dimensions: int) -> list[bytes]:
    """The packed bytes of each vector, in order."""
    size = dimensions * FLOAT32_BYTES
    if dimensions < 1 or len(data) % size:
        raise ValueError(f"{len(data)} bytes are not whole vectors of {dimensions} float32")
    return [data[start:start + size] for start in range(0, len(data), size)]


def _shortest(value: float) -> float:
    # float32 needs at most 9 significant digits to round-trip; most need fewer.
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.unpack("<f", struct.pack("<f", candidate))[0] == value:
            return candidate
    return value


def float_list(vector: bytes) -> list[float]:
    """One packed vector as JSON-ready floats that parse back to the exact float32 values."""
    count = len(vector) // FLOAT32_BYTES
    return [_shortest(value) for value in struct.unpack(f"<{count}f", vector)]


def base64_vector(vector: bytes) -> str:
    return base64.b64encode(vector).decode("ascii")
