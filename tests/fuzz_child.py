"""Mutations of Parquet objects, and the child process that scans mutated objects.

Run as ``python -m tests.fuzz_child FIXTURE_DIR MUTATIONS RESULTS``: reads one mutation per line
of ``MUTATIONS`` (JSON: ``{"id", "fixture", "ops"}``), applies it to ``FIXTURE_DIR/<fixture>``,
scans the result as ``scan`` does and appends one JSON line per mutation to ``RESULTS``, flushed
at once, so whatever kills the process, every mutation before it is on record and the parent
knows which one was running. Scanning happens here and not in pytest's own process because
an abort (SIGABRT) or a segfault in pyarrow cannot be caught in Python.

The footer helpers (``footer_spans``, ``replace_in_footer``) read the Thrift compact encoding
independently of ``detector.lake.reader``, so tests can alter one field of one column chunk without
relying on the code under test to find it.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

Op = list[Any]
Path_ = tuple[int, ...]

# --- byte mutations -------------------------------------------------------------------------


def apply(data: bytes, ops: list[Op]) -> bytes:
    """``data`` with the mutation ``ops`` applied in order. Each op is a JSON-able list:

    - ``["set", at, byte]``: one byte replaced;
    - ``["cut", at]``: truncated to ``at`` bytes;
    - ``["cut_keep_tail", at]``: truncated to ``at`` bytes, then the last 8 bytes (footer length
      and magic) appended again, so a footer is looked for where there is none;
    - ``["splice", at, src, n]``: ``n`` bytes from ``src`` (of the original) copied over ``at``;
    - ``["insert", at, [bytes]]`` / ``["delete", at, n]``: the object grows or shrinks;
    - ``["footer", path, hex]``: the Thrift value at ``path`` in the footer replaced by the
      bytes ``hex`` (see ``footer_spans``), the footer length fixed to match.
    """
    out = bytearray(data)
    for op in ops:
        kind = op[0]
        if kind == "set":
            out[op[1]] = op[2]
        elif kind == "cut":
            del out[op[1] :]
        elif kind == "cut_keep_tail":
            out = out[: op[1]] + data[-8:]
        elif kind == "splice":
            at, src, n = op[1], op[2], op[3]
            out[at : at + n] = data[src : src + n]
        elif kind == "insert":
            out[op[1] : op[1]] = bytes(op[2])
        elif kind == "delete":
            del out[op[1] : op[1] + op[2]]
        elif kind == "footer":
            out = bytearray(replace_in_footer(bytes(out), tuple(op[1]), bytes.fromhex(op[2])))
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return bytes(out)


# --- the footer, addressed by Thrift field path ----------------------------------------------


def footer_bounds(data: bytes) -> tuple[int, int]:
    """(start, end) of the Thrift-encoded FileMetaData of a well-formed object."""
    (length,) = struct.unpack("<i", data[-8:-4])
    return len(data) - 8 - length, len(data) - 8


def footer_spans(data: bytes) -> dict[Path_, tuple[int, int, int]]:
    """Every value in the footer: path -> (start, end, Thrift type), positions in ``data``.

    A path is the field ids and list indices from the FileMetaData down, e.g.
    ``(4, 0, 1, 5, 3, 1)`` is row_groups[0].columns[5].meta_data.type.
    """
    start, end = footer_bounds(data)
    buf = data[start:end]
    spans: dict[Path_, tuple[int, int, int]] = {}
    _struct(buf, 0, (), spans)
    return {p: (start + a, start + b, t) for p, (a, b, t) in spans.items()}


def replace_in_footer(data: bytes, path: Path_, value: bytes) -> bytes:
    """``data`` with the footer value at ``path`` replaced by the encoded ``value``.

    The footer is last in the object, so its length may change: only the length field after it
    is rewritten; every offset in the footer points before it.
    """
    start, end = footer_bounds(data)
    a, b, _ = footer_spans(data)[path]
    footer = data[start:a] + value + data[b:end]
    return data[:start] + footer + struct.pack("<i", len(footer)) + b"PAR1"


def varint(n: int) -> bytes:
    """The zigzag varint of a Thrift i16/i32/i64."""
    return uvarint((n << 1) ^ (n >> 63))


def binary(value: bytes) -> bytes:
    """A Thrift binary: its length as a varint, then its bytes."""
    return uvarint(len(value)) + value


def uvarint(z: int) -> bytes:
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _struct(buf: bytes, pos: int, path: Path_, spans: dict[Path_, tuple[int, int, int]]) -> int:
    fid = 0
    while True:
        b = buf[pos]
        pos += 1
        if not b & 0x0F:
            return pos
        if b >> 4:
            fid += b >> 4
        else:
            z, pos = _uvarint(buf, pos)
            fid = (z >> 1) ^ -(z & 1)
        t = b & 0x0F
        begin = pos
        pos = _value(buf, pos, t, (*path, fid), spans)
        spans[(*path, fid)] = (begin, pos, t)


def _value(
    buf: bytes, pos: int, t: int, path: Path_, spans: dict[Path_, tuple[int, int, int]]
) -> int:
    if t in (1, 2):  # bool in the field header
        return pos
    if t == 3:
        return pos + 1
    if t in (4, 5, 6):
        return _uvarint(buf, pos)[1]
    if t == 7:
        return pos + 8
    if t == 8:
        n, pos = _uvarint(buf, pos)
        return pos + n
    if t in (9, 10):
        b = buf[pos]
        pos += 1
        size, et = b >> 4, b & 0x0F
        if size == 15:
            size, pos = _uvarint(buf, pos)
        for i in range(size):
            begin = pos
            pos = pos + 1 if et in (1, 2) else _value(buf, pos, et, (*path, i), spans)
            spans[(*path, i)] = (begin, pos, et)
        return pos
    if t == 11:
        size, pos = _uvarint(buf, pos)
        if size:
            kv = buf[pos]
            pos += 1
            for i in range(size):
                for part, et in ((0, kv >> 4), (1, kv & 0x0F)):
                    pos = pos + 1 if et in (1, 2) else _value(buf, pos, et, (*path, i, part), spans)
        return pos
    if t == 12:
        return _struct(buf, pos, path, spans)
    raise ValueError(f"Thrift type {t}")


# --- the child process -----------------------------------------------------------------------

NAME = "s3://lake-bucket/aws/CLOUD_TRAIL_MGMT/2.0/region=us-east-1/accountId=1/fuzz.gz.parquet"
MEMORY_CAP = 6 << 30  # address space: a runaway allocation fails here instead of the machine


def scan_one(data: bytes, allowlist: Any) -> dict[str, Any]:
    """Scan ``data`` as ``scan`` does: the outcome, or the exception that escaped."""
    from detector.analysis import engine
    from detector.core.errors import BadObject

    try:
        result = engine.scan_object(io.BytesIO(data), NAME, allowlist)
        findings = [f.to_record() for f in result.aggregate.findings()]
        return {"outcome": "scanned", "findings": len(findings)}
    except BadObject as exc:
        message = str(exc)
        well_formed = message.startswith(f"{NAME}: ") and not any(c in message for c in "\r\n")
        return {"outcome": "named" if well_formed else "malformed", "reason": exc.reason[:300]}
    except Exception as exc:  # exactly what the fuzz test looks for
        return {"outcome": "escaped", "reason": f"{type(exc).__name__}: {str(exc)[:300]}"}


def main(argv: list[str]) -> int:
    import resource

    from detector.core.allowlist import Allowlist
    from tests.lake import CI_ROLE

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_CAP:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, hard))
    fixtures, mutations, results = Path(argv[0]), Path(argv[1]), Path(argv[2])
    allowlist = Allowlist.of([CI_ROLE])
    originals: dict[str, bytes] = {}
    with mutations.open() as lines, results.open("a") as out:
        for line in lines:
            m = json.loads(line)
            name = m["fixture"]
            if name not in originals:
                originals[name] = (fixtures / name).read_bytes()
            report = scan_one(apply(originals[name], m["ops"]), allowlist)
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            out.write(json.dumps({"id": m["id"], **report, "peak_rss_mb": rss_mb}) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
