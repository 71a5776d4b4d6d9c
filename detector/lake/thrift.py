"""The Thrift compact protocol, as far as walking the Parquet footer needs: varints, field and
list headers, and skipping any value undecoded, as Thrift's C++ does (a type nibble of 0 ends a
struct). A malformed encoding is a ``ValueError``, running past the buffer an ``IndexError``:
``parquet_footer`` names either as a corrupt footer."""

from __future__ import annotations

# Thrift compact protocol type codes (1, 2: bool true/false, held in the field header).
_T_BYTE, _T_I32, _T_I64, _T_DOUBLE, _T_BINARY = 3, 5, 6, 7, 8
_T_LIST, _T_SET, _T_MAP, _T_STRUCT = 9, 10, 11, 12
_MAX_NESTING = 32  # FileMetaData nests under 10 deep (Thrift's C++ stops at 64)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return b, pos + 1
    out, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos + 1
        shift += 7
        if shift > 70:
            raise ValueError("Thrift varint too long")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _skip_fields(buf: bytes, pos: int, depth: int) -> int:
    """Position after the rest of a struct, from its next field header through its end.

    Scalars are skipped inline: they are most fields, and a call for each would double the
    cost of the walk (about 15 µs per column chunk as it is).
    """
    while True:
        b = buf[pos]
        pos += 1
        if not b & 0x0F:  # type 0 ends a struct, whatever the high bits (as in Thrift's C++)
            return pos
        if not b >> 4:  # long form: the field id follows as a varint
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        t = b & 0x0F
        if 4 <= t <= 6:  # i16, i32, i64: one varint
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        elif t == _T_BINARY:
            n, pos = _varint(buf, pos)
            pos += n
        else:
            pos = _skip_value(buf, pos, t, depth)


def _skip_value(buf: bytes, pos: int, t: int, depth: int) -> int:
    """Position after one value of Thrift compact type ``t``."""
    if 4 <= t <= 6:
        while buf[pos] >= 0x80:
            pos += 1
        return pos + 1
    if t == _T_BINARY:
        n, pos = _varint(buf, pos)
        return pos + n
    if t in (1, 2):  # a bool field: its value is in the header
        return pos
    if depth >= _MAX_NESTING:
        raise ValueError("Thrift values nested too deep")
    if t == _T_STRUCT:
        return _skip_fields(buf, pos, depth + 1)
    if t in (_T_LIST, _T_SET):
        size, et, pos = _list_header(buf, pos)
        return _skip_elements(buf, pos, et, size, depth + 1)
    if t == _T_MAP:
        size, pos = _varint(buf, pos)
        if size:
            kv = buf[pos]
            pos += 1
            for _ in range(size):
                pos = _skip_elements(buf, pos, kv >> 4, 1, depth + 1)
                pos = _skip_elements(buf, pos, kv & 0x0F, 1, depth + 1)
        return pos
    if t == _T_BYTE:
        return pos + 1
    if t == _T_DOUBLE:
        return pos + 8
    raise ValueError(f"unknown Thrift type {t}")


def _skip_elements(buf: bytes, pos: int, t: int, count: int, depth: int) -> int:
    if t <= _T_BYTE:  # in a container a bool takes one byte, as a byte does
        if pos + count > len(buf):
            raise ValueError("Thrift list runs past the footer")
        return pos + count
    if t == _T_BINARY:
        for _ in range(count):
            n, pos = _varint(buf, pos)
            pos += n
        return pos
    if t == _T_STRUCT:
        for _ in range(count):
            pos = _skip_fields(buf, pos, depth)
        return pos
    if 4 <= t <= 6:  # i16, i32, i64: varints
        for _ in range(count):
            while buf[pos] >= 0x80:
                pos += 1
            pos += 1
        return pos
    for _ in range(count):
        pos = _skip_value(buf, pos, t, depth)
    return pos


def _list_header(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(size, element type, position after) of a list or set."""
    b = buf[pos]
    if b >> 4 == 15:
        size, pos = _varint(buf, pos + 1)
        return size, b & 0x0F, pos
    return b >> 4, b & 0x0F, pos + 1


def _field_header(buf: bytes, pos: int, last: int) -> tuple[int, int, int]:
    """(field id, type, position after) of a struct's next field; type 0 at its end."""
    b = buf[pos]
    if not b & 0x0F:  # type 0 ends a struct, whatever the high bits (as in Thrift's C++)
        return 0, 0, pos + 1
    if b >> 4:
        return last + (b >> 4), b & 0x0F, pos + 1
    n, pos = _varint(buf, pos + 1)
    return _zigzag(n), b & 0x0F, pos
