#!/usr/bin/env python3
"""Build the Lambda deployment package for the function's platform, without docker.

    python scripts/package.py [--arch arm64|x86_64] [--python-version 3.13]
                              [--out dist/lambda.zip] [--build-dir build/lambda]
    python scripts/package.py --artifacts-dir DIR     # SAM `BuildMethod: makefile`

Steps:
1. Export the runtime part of ``uv.lock`` (``[project] dependencies`` and what they need, each
   pinned with its hashes; ``uv export --locked`` fails if the lock is out of date with
   pyproject.toml), drop boto3 and its dependencies, which the Lambda runtime provides, and
   install the rest with ``uv pip install --require-hashes --no-deps`` for the target: manylinux
   wheels of the target architecture and CPython version, markers judged for the target.
2. Copy the ``detector`` package (``.py`` files only).
3. Trim what the function never loads (``TRIM``; pyarrow's tests, headers, Cython sources and
   the libraries of Flight, S3, GCS, Azure, HDFS, ORC, Parquet encryption), check that no
   remaining shared library links one of the removed ones, and strip symbols from the shared
   libraries, keeping a stripped file only if its loaded segments are byte-identical.
4. When this machine can run the target (same architecture, an interpreter of the target version
   on PATH or under pyenv), load the trimmed pyarrow in an isolated interpreter and exercise what
   the detector uses (Parquet read, compute kernels, RE2 regexes, map_lookup, Acero group_by).
5. Write a deterministic zip (sorted entries, 1980-01-01 timestamps, 0644/0755), or copy the
   tree into ``--artifacts-dir``, and report sizes. Fails above Lambda's 250 MB unzipped limit.
   ``<out>.wheels.txt`` beside the zip lists the distributions bundled (name==version).

Needs Python >= 3.11 (tomllib) and uv (``--uv``, else ``$UV``, else ``.tools/uv/bin/uv``, else
``uv`` on PATH): ``make package`` bootstraps the locked uv first. Wheels come from uv's cache.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "detector"
MIB = 1024 * 1024
LAMBDA_LIMIT = 250 * MIB  # 262,144,000 bytes: function code plus layers, unzipped
GOAL = 120 * MIB
MARKER = ".package-build"  # marks a build directory this script may wipe
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Provided by every Lambda Python runtime (boto3 and its dependencies): never bundled.
RUNTIME_PROVIDED = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
)
# What those distributions install at the top level, removed should any slip in.
RUNTIME_PROVIDED_PATHS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "urllib3",
    "dateutil",
    "six.py",
    "bin",  # console scripts of the above (jp.py)
)

ARCHES = {"arm64": "aarch64", "x86_64": "x86_64"}
ARCH_ALIASES = {"aarch64": "arm64", "amd64": "x86_64"}
ELF_MACHINE = {"aarch64": 183, "x86_64": 62}

# Paths (globs relative to the install root) the detector never loads. Each was removed from an
# x86_64 build and the detector's smoke test (tests/integration/test_package.py) still passed.
TRIM: tuple[tuple[str, str], ...] = (
    # Never executed: bytecode caches, tests, sources, headers, type stubs, build-system files.
    ("**/__pycache__", "bytecode caches"),
    ("**/*.pyc", "bytecode"),
    ("pyarrow/tests", "pyarrow test suite"),
    ("pyarrow/_pyarrow_cpp_tests.*", "pyarrow C++ test module"),
    ("pyarrow/conftest.py", "pytest configuration"),
    ("pyarrow/include", "C++ headers"),
    ("pyarrow/includes", "Cython declarations"),
    ("pyarrow/src", "C++ sources of libarrow_python"),
    ("**/*.pyx", "Cython sources"),
    ("**/*.pxd", "Cython declarations"),
    ("**/*.pxi", "Cython sources"),
    ("**/*.h", "C/C++ headers"),
    ("**/*.hpp", "C++ headers"),
    ("**/*.cc", "C++ sources"),
    ("**/*.cpp", "C++ sources"),
    ("**/*.c", "C sources"),
    ("**/*.cmake", "CMake files"),
    ("**/cmake", "CMake files"),
    ("**/pkgconfig", "pkg-config files"),
    ("**/*.pyi", "type stubs"),
    ("*-stubs", "type stubs"),
    # pyarrow modules the detector never imports, and the libraries only they link.
    ("pyarrow/_flight.*", "Arrow Flight RPC"),
    ("pyarrow/flight.py", "Arrow Flight RPC"),
    ("pyarrow/libarrow_flight.so*", "Arrow Flight RPC"),
    ("pyarrow/libarrow_python_flight.so*", "Arrow Flight RPC"),
    ("pyarrow/_s3fs.*", "S3 filesystem (the detector reads S3 with boto3)"),
    ("pyarrow/libarrow_s3.so*", "S3 filesystem (the detector reads S3 with boto3)"),
    ("pyarrow/_gcsfs.*", "GCS filesystem"),
    ("pyarrow/_azurefs.*", "Azure filesystem"),
    ("pyarrow/_hdfs.*", "HDFS filesystem"),
    ("pyarrow/_orc.*", "ORC format"),
    ("pyarrow/_dataset_orc.*", "ORC format"),
    ("pyarrow/orc.py", "ORC format"),
    ("pyarrow/_parquet_encryption.*", "Parquet modular encryption"),
    ("pyarrow/_dataset_parquet_encryption.*", "Parquet modular encryption"),
    ("pyarrow/libarrow_python_parquet_encryption.so*", "Parquet modular encryption"),
    ("pyarrow/_substrait.*", "Substrait plans (libarrow_substrait stays: lib links it)"),
    ("pyarrow/substrait.py", "Substrait plans"),
    ("pyarrow/gandiva*.so", "Gandiva expression compiler"),
    ("pyarrow/libgandiva.so*", "Gandiva expression compiler"),
    ("pyarrow/_cuda*.so", "CUDA"),
    ("pyarrow/libarrow_cuda.so*", "CUDA"),
)

# Exercises, in the built tree, what the detector uses of pyarrow. Run with `python -I -S -B`
# (-B: no __pycache__ may be written into the tree).
SELF_CHECK = r"""
import io, sys
build = sys.argv[1]
sys.path.insert(0, build)
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
assert pa.__file__.startswith(build), pa.__file__
m = pa.map_(pa.string(), pa.string())
t = pa.table({
    "op": ["PutImage", "GetObject", "PutImage"],
    "who": ["arn:aws:iam::1:user/a", "arn:aws:iam::1:role/ci", "arn:aws:iam::1:user/a"],
    "req": ['{"repositoryName":"app"}', None, '{"repositoryName":"web"}'],
    "u": pa.array([[("k", "1")], [], [("k", "3")]], m),
})
for codec in ("gzip", "zstd", "snappy"):
    buf = io.BytesIO()
    pq.write_table(t, buf, compression=codec, row_group_size=2)
    buf.seek(0)
    f = pq.ParquetFile(buf, read_dictionary=["op"], buffer_size=1 << 16)
    got = pa.Table.from_batches(list(f.iter_batches(batch_size=1, row_groups=[0, 1])))
    assert got.num_rows == 3 and f.read_row_group(1).num_rows == 1, codec
g = t.group_by(["who"], use_threads=False).aggregate([("op", "count"), ("req", "list")])
assert g.num_rows == 2
rx = pc.extract_regex(t["req"], r'"repositoryName":"(?P<r>[^"]*)"')
assert pc.struct_field(rx, [0]).to_pylist() == ["app", None, "web"]
assert pc.match_substring_regex(t["who"], r"(?s)^(?:arn:aws:iam::1:role/.*)$").to_pylist() == [
    False, True, False]
assert pc.map_lookup(t["u"], "k", "first").to_pylist() == ["1", None, "3"]
assert pc.is_in(t["op"], value_set=pa.array(["PutImage"])).to_pylist() == [True, False, True]
# Time of day (the business-hours detection): int64 arithmetic, and zone-aware fields.
ms = pa.array([0, 1_795_262_400_000, -1], pa.int64())
assert pc.subtract(ms, pc.multiply(pc.divide(ms, 7), 7)).to_pylist() == [0, 6, -1]
local = ms.cast(pa.timestamp("ms", tz="UTC"))
assert pc.hour(local).to_pylist() == [0, 12, 23] and pc.minute(local).to_pylist() == [0, 0, 59]
assert pc.day_of_week(local).to_pylist() == [3, 5, 2]
print("self-check: pyarrow", pa.__version__, "loads and runs from the build")
"""


class BuildError(Exception):
    """A build step failed; the message says which and why."""


@dataclass(frozen=True)
class Target:
    arch: str  # Lambda's name: arm64 | x86_64
    python: str  # "3.13"

    @property
    def machine(self) -> str:
        return ARCHES[self.arch]

    @property
    def platforms(self) -> list[str]:
        return [f"manylinux_2_28_{self.machine}", f"manylinux2014_{self.machine}"]

    @property
    def uv_platform(self) -> str:
        # manylinux_2_28: the glibc of Amazon Linux 2023, under every python3.12+ runtime.
        return f"{self.machine}-manylinux_2_28"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def describe(self) -> str:
        return f"Lambda python{self.python} {self.arch} ({self.abi}, {' / '.join(self.platforms)})"


@dataclass
class Sizes:
    stages: list[tuple[str, int, int]] = field(default_factory=list)  # (stage, bytes, files)

    def record(self, stage: str, root: Path) -> None:
        files = list(_files(root))
        self.stages.append((stage, sum(p.stat().st_size for p in files), len(files)))


# ----------------------------------------------------------------------------- configuration


def _template_value(pattern: str) -> str | None:
    """First match of ``pattern`` in template.yaml (regex: YAML tags defeat a YAML loader)."""
    template = ROOT / "template.yaml"
    if not template.is_file():
        return None
    match = re.search(pattern, template.read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1) if match else None


def default_python_version() -> str:
    return _template_value(r"^\s*Runtime:\s*['\"]?python(\d+\.\d+)") or "3.13"


def default_arch() -> str:
    found = _template_value(r"^\s*Architectures:\s*(?:\[\s*|\n\s*-\s*)['\"]?(arm64|x86_64)")
    return found or "arm64"


def normalise_arch(value: str) -> str:
    arch = ARCH_ALIASES.get(value.strip().lower(), value.strip().lower())
    if arch not in ARCHES:
        raise argparse.ArgumentTypeError(f"unknown architecture {value!r}: use arm64 or x86_64")
    return arch


def python_version(value: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", value.strip()):
        raise argparse.ArgumentTypeError(f"python version {value!r}: expected 3.X, e.g. 3.13")
    return value.strip()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_uv(explicit: str | None) -> str:
    """The uv executable to use; BuildError naming what was tried when there is none."""
    candidates = [explicit, os.environ.get("UV"), str(ROOT / ".tools" / "uv" / "bin" / "uv")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("uv")
    if found:
        return found
    raise BuildError(
        "uv not found (--uv, $UV, .tools/uv/bin/uv, PATH): run `make package`, which "
        "installs the locked uv first"
    )


@dataclass(frozen=True)
class Pin:
    """One distribution of the runtime lock: its requirement block as uv exported it."""

    name: str
    version: str
    block: str  # "name==version ; marker \\n    --hash=... \\n ..."


def parse_export(text: str) -> list[Pin]:
    """Pins of a ``uv export --format requirements-txt --no-annotate --no-header`` output."""
    pins: list[Pin] = []
    block: list[str] = []

    def close() -> None:
        if not block:
            return
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", block[0])
        if not match:
            raise BuildError(f"uv export: cannot read the requirement {block[0]!r}")
        pins.append(Pin(canonical(match.group(1)), match.group(2), "\n".join(block)))
        block.clear()

    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            if not block:
                raise BuildError(f"uv export: continuation line without a requirement: {line!r}")
            block.append(line)
            continue
        close()
        block.append(line)
    close()
    if not pins:
        raise BuildError("uv export printed no requirement")
    return pins


def locked_runtime(uv: str, verbose: bool) -> list[Pin]:
    """Every runtime distribution of uv.lock (markers unevaluated), with its hashes."""
    cmd = [
        uv,
        "export",
        "--locked",
        "--no-default-groups",
        "--no-emit-project",
        "--format",
        "requirements-txt",
        "--no-annotate",
        "--no-header",
        "--directory",
        str(ROOT),
    ]
    print("$", " ".join(["uv", *cmd[1:]]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(
            f"uv export failed (exit {proc.returncode}); is uv.lock out of date with "
            f"pyproject.toml? Run `make lock`.\n{proc.stderr.strip()}"
        )
    if verbose:
        print(proc.stderr, end="")
    return parse_export(proc.stdout)


# ----------------------------------------------------------------------------- file helpers


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name != MARKER:
                yield Path(dirpath, name)


def _remove(path: Path) -> int:
    """Delete a file or tree; the bytes freed."""
    if path.is_symlink() or path.is_file():
        size = path.lstat().st_size
        path.unlink()
        return size
    if path.is_dir():
        size = sum(p.stat().st_size for p in _files(path))
        shutil.rmtree(path)
        return size
    return 0


def _fresh_dir(path: Path) -> None:
    """Empty ``path``, refusing to wipe anything this script did not create."""
    resolved = path.resolve()
    forbidden = {Path("/"), Path.home().resolve(), ROOT, *ROOT.parents}
    if resolved in forbidden:
        raise BuildError(f"refusing to use {path} as the build directory")
    if resolved.exists():
        if any(resolved.iterdir()) and not (resolved / MARKER).exists():
            raise BuildError(
                f"{path} exists and was not made by this script (no {MARKER}); "
                "remove it or pick another --build-dir"
            )
        shutil.rmtree(resolved)
    resolved.mkdir(parents=True)
    (resolved / MARKER).write_text("made by scripts/package.py; deleted on every build\n")


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# ----------------------------------------------------------------------------- install


def install(uv: str, pins: list[Pin], target: Target, build: Path, verbose: bool) -> None:
    """Install exactly ``pins`` (hash-checked, no resolution) for the target into ``build``."""
    with tempfile.TemporaryDirectory(prefix="package-") as tmp:
        requirements = Path(tmp, "runtime.txt")
        requirements.write_text("".join(p.block + "\n" for p in pins), encoding="utf-8")
        cmd = [
            uv,
            "pip",
            "install",
            "--no-config",  # pyproject's [tool.uv] is for locking; these pins are final
            "--target",
            str(build),
            "--no-deps",
            "--require-hashes",
            "--only-binary",
            ":all:",
            "--python-platform",
            target.uv_platform,
            "--python-version",
            target.python,
            "-r",
            str(requirements),
        ]
        if not verbose:
            cmd.append("--quiet")
        print("$", " ".join(["uv", *cmd[1:]]), flush=True)
        proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise BuildError(f"uv pip install failed (exit {proc.returncode}): see its output above")


def installed(build: Path) -> list[tuple[str, str]]:
    """(name, version) of every distribution installed into ``build``, from its dist-info."""
    found = []
    for meta in sorted(build.glob("*.dist-info/METADATA")):
        fields = dict(
            line.split(": ", 1)
            for line in meta.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.startswith(("Name: ", "Version: "))
        )
        found.append((canonical(fields["Name"]), fields["Version"]))
    return sorted(found)


def wheel_tags(build: Path) -> dict[str, str]:
    """Platform-specific wheels installed, with their tags (to show what pip picked)."""
    tags = {}
    for wheel in sorted(build.glob("*.dist-info/WHEEL")):
        found = re.findall(r"^Tag:\s*(\S+)", wheel.read_text(encoding="utf-8"), re.MULTILINE)
        if found and not all(t.endswith("-none-any") for t in found):
            tags[wheel.parent.name.removesuffix(".dist-info")] = found[0]
    return tags


def copy_package(build: Path) -> int:
    src = ROOT / PACKAGE
    count = 0
    for path in sorted(src.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        dest = build / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        dest.chmod(0o644)
        count += 1
    if not count:
        raise BuildError(f"no .py files under {src}")
    return count


# ----------------------------------------------------------------------------- ELF


@dataclass
class Elf:
    machine: int
    soname: str | None
    needed: list[str]
    segments: list[tuple[object, ...]]  # program headers and a hash of each segment's bytes


def _digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def read_elf(path: Path) -> Elf | None:
    """The dynamic-linking facts of a 64-bit ELF file, from its program headers; None if it is
    not one (or is too damaged to read)."""
    try:
        return _read_elf(path)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError):
        return None


def _read_elf(path: Path) -> Elf | None:
    with path.open("rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        data = b"\x7fELF" + f.read()
    if data[4] != 2:  # ELFCLASS64 only: both Lambda architectures are 64-bit
        return None
    end = "<" if data[5] == 1 else ">"
    machine = struct.unpack_from(end + "H", data, 18)[0]
    phoff = struct.unpack_from(end + "Q", data, 32)[0]
    phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    headers = [
        struct.unpack_from(end + "IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)
    ]
    loads = [h for h in headers if h[0] == 1]  # PT_LOAD

    def file_offset(vaddr: int) -> int:
        for _, _, off, va, _, filesz, _, _ in loads:
            if va <= vaddr < va + filesz:
                return int(off + vaddr - va)
        raise ValueError(f"{path}: address {vaddr:#x} outside every PT_LOAD segment")

    needed_off: list[int] = []
    soname_off = strtab = None
    for p_type, _, off, _, _, filesz, _, _ in headers:
        if p_type != 2:  # PT_DYNAMIC
            continue
        for i in range(0, filesz, 16):
            tag, val = struct.unpack_from(end + "qQ", data, off + i)
            if tag == 0:
                break
            if tag == 1:
                needed_off.append(val)
            elif tag == 14:
                soname_off = val
            elif tag == 5:
                strtab = file_offset(val)

    def string(offset: int) -> str:
        assert strtab is not None
        start = strtab + offset
        return data[start : data.index(b"\0", start)].decode()

    masked = bytearray(data)
    masked[40:48] = bytes(8)  # e_shoff: section headers are not loaded
    masked[60:64] = bytes(4)  # e_shnum, e_shstrndx
    segments: list[tuple[object, ...]] = [
        (p_type, flags, va, pa, filesz, memsz, align, _digest(masked[off : off + filesz]))
        for p_type, flags, off, va, pa, filesz, memsz, align in headers
    ]
    return Elf(
        machine=machine,
        soname=string(soname_off) if soname_off is not None and strtab is not None else None,
        needed=[string(o) for o in needed_off] if strtab is not None else [],
        segments=segments,
    )


def elf_files(build: Path) -> dict[Path, Elf]:
    found = {}
    for path in _files(build):
        if path.is_symlink() or ".so" not in path.name:
            continue
        elf = read_elf(path)
        if elf is not None:
            found[path] = elf
    return found


def drop_duplicate_libraries(build: Path) -> list[tuple[Path, int]]:
    """Wheels cannot hold symlinks, so pyarrow ships libX.so, libX.so.N and libX.so.N.M.P as
    three copies; the loader only ever opens the SONAME (libX.so.N)."""
    removed = []
    for path, elf in elf_files(build).items():
        if elf.soname and path.name != elf.soname and (path.parent / elf.soname).is_file():
            removed.append((path.relative_to(build), _remove(path)))
    return removed


def trim(build: Path) -> list[tuple[str, str, int]]:
    """Apply ``TRIM``; (path, reason, bytes) of what went."""
    removed = []
    for pattern, reason in TRIM:
        for path in sorted(build.glob(pattern)):
            if path.exists() or path.is_symlink():
                removed.append((str(path.relative_to(build)), reason, _remove(path)))
    for rel, size in drop_duplicate_libraries(build):
        removed.append((str(rel), "duplicate copy of a library under its SONAME", size))
    for name in RUNTIME_PROVIDED_PATHS:
        path = build / name
        if path.exists():
            removed.append((name, "provided by the Lambda runtime", _remove(path)))
    for dist in sorted(build.glob("*.dist-info")):
        name = dist.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        if canonical(name) in RUNTIME_PROVIDED:
            removed.append((dist.name, "provided by the Lambda runtime", _remove(dist)))
    return removed


def check_links(build: Path, target: Target, removed: Iterable[str]) -> list[str]:
    """Fail if a remaining library links a removed one or is for another architecture;
    the libraries expected from the system (glibc, libstdc++ ...)."""
    gone = {Path(r).name for r in removed}
    elves = elf_files(build)
    present = {p.name for p in elves} | {e.soname for e in elves.values() if e.soname}
    problems, external = [], set()
    for path, elf in sorted(elves.items()):
        rel = path.relative_to(build)
        if elf.machine != ELF_MACHINE[target.machine]:
            problems.append(f"{rel} is for ELF machine {elf.machine}, not {target.machine}")
        for lib in elf.needed:
            if lib in gone and lib not in present:
                problems.append(f"{rel} links {lib}, which the trim removed")
            elif lib not in present:
                external.add(lib)
    if problems:
        raise BuildError("the trimmed package is broken:\n  " + "\n  ".join(problems))
    return sorted(external)


# ----------------------------------------------------------------------------- strip


def find_strip(target: Target) -> str | None:
    """A strip that understands the target's ELF files. GNU strip only handles its own
    architecture (and "elf64-little", which is not to be trusted with relocations)."""
    candidates = []
    if sys.platform == "linux" and platform.machine() == target.machine:
        candidates.append("strip")
    candidates.append(f"{target.machine}-linux-gnu-strip")
    candidates += ["llvm-strip", *(f"llvm-strip-{v}" for v in range(30, 9, -1))]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def strip_libraries(build: Path, tool: str) -> tuple[int, list[str]]:
    """``strip --strip-unneeded`` every shared library; (bytes saved, files left unstripped).

    A stripped file is kept only if every program header and every loaded byte is unchanged:
    the dynamic loader sees the very same image, only the unloaded symbol tables and debug
    sections are gone. That holds for any architecture, so it needs no target machine to test.
    """
    saved, kept = 0, []
    for path, before in elf_files(build).items():
        out = path.with_name(path.name + ".stripped")
        proc = subprocess.run(
            [tool, "--strip-unneeded", "-o", str(out), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        after = read_elf(out) if proc.returncode == 0 and out.exists() else None
        if after is None or (after.segments, after.needed, after.soname) != (
            before.segments,
            before.needed,
            before.soname,
        ):
            out.unlink(missing_ok=True)
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "changed"
            kept.append(f"{path.relative_to(build)} ({why})")
            continue
        saved += path.stat().st_size - out.stat().st_size
        out.chmod(stat.S_IMODE(path.stat().st_mode))
        out.replace(path)
    return saved, kept


# ----------------------------------------------------------------------------- self-check


def _interpreters(version: str) -> Iterator[str]:
    """Candidate interpreters of CPython ``version``: PATH, then pyenv's installs."""
    found = shutil.which(f"python{version}")
    if found:
        yield found
    roots = [os.environ.get("PYENV_ROOT"), str(Path.home() / ".pyenv")]
    for root in dict.fromkeys(r for r in roots if r):
        for candidate in sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}")):
            yield str(candidate)


def find_python(version: str) -> str | None:
    """An interpreter on this machine that really is CPython ``version`` (shims may refuse)."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    for candidate in _interpreters(version):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def host_python(target: Target) -> str | None:
    """An interpreter on this machine able to load the target's wheels, if any."""
    if sys.platform != "linux" or platform.machine() != target.machine:
        return None
    return find_python(target.python)


def self_check(build: Path, target: Target) -> str:
    python = host_python(target)
    if python is None:
        return (
            f"self-check: skipped (no python{target.python} for {target.machine} here: "
            f"this machine is {platform.machine()})"
        )
    proc = subprocess.run(
        [python, "-I", "-S", "-B", "-c", SELF_CHECK, str(build)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError("the built pyarrow does not work:\n" + proc.stdout + proc.stderr)
    return proc.stdout.strip()


# ----------------------------------------------------------------------------- output


def write_zip(build: Path, out: Path) -> None:
    """Sorted entries, fixed timestamps and permissions: the same tree gives the same bytes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    entries = sorted((p.relative_to(build).as_posix(), p) for p in _files(build))
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix: external_attr carries the mode
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED, 6)
    tmp.replace(out)


def copy_tree(build: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in _files(build):
        target = dest / path.relative_to(build)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def largest(build: Path, n: int = 10) -> list[tuple[int, str]]:
    sizes = [(p.stat().st_size, p.relative_to(build).as_posix()) for p in _files(build)]
    return sorted(sizes, key=lambda s: (-s[0], s[1]))[:n]


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the Lambda package (dist/lambda.zip) for its platform, without docker."
    )
    parser.add_argument(
        "--arch",
        type=normalise_arch,
        default=os.environ.get("ARCH") or default_arch(),
        help="Lambda architecture: arm64 or x86_64 (default: $ARCH, else the Architectures of "
        "template.yaml, else arm64)",
    )
    parser.add_argument(
        "--python-version",
        type=python_version,
        default=os.environ.get("PYTHON_VERSION") or default_python_version(),
        help="target CPython X.Y (default: $PYTHON_VERSION, else the Runtime of template.yaml, "
        "else 3.13)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "lambda.zip")
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=ROOT / "build" / "lambda",
        help="staging directory, wiped on every build (default: build/lambda)",
    )
    parser.add_argument(
        "--artifacts-dir",
        type=Path,
        help="install the package tree here instead of zipping (SAM's $ARTIFACTS_DIR)",
    )
    parser.add_argument(
        "--uv", help="uv executable (default: $UV, else .tools/uv/bin/uv, else uv on PATH)"
    )
    parser.add_argument("--no-trim", action="store_true", help="keep everything pip installed")
    parser.add_argument("--no-strip", action="store_true", help="do not strip shared libraries")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pip's progress")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> int:
    target = Target(args.arch, args.python_version)
    staging: Path = args.build_dir
    sizes = Sizes()
    print(f"target: {target.describe()}", flush=True)
    if target.python in {"3.8", "3.9", "3.10", "3.11"}:
        print(
            f"warning: Lambda's python{target.python} runs on Amazon Linux 2 (glibc 2.26); "
            "manylinux_2_28 wheels need glibc 2.28 and load only on python3.12+ runtimes"
        )

    uv = find_uv(args.uv)
    pins = locked_runtime(uv, args.verbose)
    kept = [pin for pin in pins if pin.name not in RUNTIME_PROVIDED]
    left = [f"{p.name} {p.version}" for p in pins if p.name in RUNTIME_PROVIDED]
    _fresh_dir(staging)
    install(uv, kept, target, staging, args.verbose)
    bundled = installed(staging)
    print("bundled:", ", ".join(f"{n} {v}" for n, v in bundled))
    print("left to the Lambda runtime:", ", ".join(left) or "-")
    leaked = [n for n, _ in bundled if n in RUNTIME_PROVIDED]
    if leaked:
        raise BuildError(f"runtime-provided distributions were installed: {', '.join(leaked)}")
    for dist, tag in wheel_tags(staging).items():
        print(f"wheel: {dist} ({tag})")
    print(f"copied {copy_package(staging)} files of {PACKAGE}/")
    sizes.record("installed", staging)

    removed: list[tuple[str, str, int]] = []
    if not args.no_trim:
        removed = trim(staging)
        sizes.record("trimmed", staging)
        by_reason: dict[str, int] = {}
        for _, reason, size in removed:
            by_reason[reason] = by_reason.get(reason, 0) + size
        print(f"trimmed {len(removed)} paths:")
        for reason, size in sorted(by_reason.items(), key=lambda r: -r[1]):
            print(f"  {_mb(size):>10}  {reason}")
    external = check_links(staging, target, (r for r, _, _ in removed))
    print("system libraries linked:", ", ".join(external) or "-")

    if not args.no_strip:
        tool = find_strip(target)
        if tool is None:
            print(f"strip: no strip for {target.machine} found (binutils or llvm); skipped")
        else:
            saved, unstripped = strip_libraries(staging, tool)
            sizes.record("stripped", staging)
            print(f"strip: {tool} --strip-unneeded saved {_mb(saved)}")
            for line in unstripped:
                print(f"  left unstripped: {line}")
    print(self_check(staging, target), flush=True)

    total = sizes.stages[-1][1]
    print("size, unzipped:")
    for stage, size, files in sizes.stages:
        print(f"  {stage:<10} {_mb(size):>10}  ({files} files)")
    print("largest files:")
    for size, name in largest(staging):
        print(f"  {_mb(size):>10}  {name}")
    if total > LAMBDA_LIMIT:
        raise BuildError(
            f"unzipped size {_mb(total)} exceeds Lambda's limit of {_mb(LAMBDA_LIMIT)} "
            "(262,144,000 bytes, including layers)"
        )
    if total > GOAL:
        print(f"warning: unzipped size {_mb(total)} is above the {_mb(GOAL)} goal")

    if args.artifacts_dir is not None:
        copy_tree(staging, args.artifacts_dir)
        print(f"installed into {args.artifacts_dir}: {_mb(total)} unzipped")
    else:
        write_zip(staging, args.out)
        manifest = args.out.with_name(args.out.name + ".wheels.txt")
        manifest.write_text("".join(f"{n}=={v}\n" for n, v in bundled), encoding="utf-8")
        print(f"wrote {manifest}: {len(bundled)} distributions from uv.lock")
        print(
            f"wrote {args.out}: {_mb(args.out.stat().st_size)} zipped, {_mb(total)} unzipped, "
            f"for {target.describe()}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - SAM runs this with any python3
        print("scripts/package.py needs Python >= 3.11 (tomllib)", file=sys.stderr)
        return 2
    try:
        args = parse_args(argv)
        return build(args)
    except BuildError as exc:
        print(f"package: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
