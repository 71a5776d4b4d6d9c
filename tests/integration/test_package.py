"""`scripts/package.py` end to end: the zip it builds runs the detector as Lambda would load it.

The package is built for this machine's platform (x86_64 / CPython 3.11 here) so that it can be
imported here: then a fresh interpreter, isolated (``-I``) and without site-packages (``-S``),
sees only the unzipped package and a directory holding boto3 and its dependencies (the Lambda
runtime's share, which the package must not bundle), imports ``detector.handler`` and scans
Security Lake objects of both OCSF versions. Skipped only when pip cannot reach a package index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import lake

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
LAMBDA_LIMIT = 250 * MIB
ARCHES = {"x86_64": "x86_64", "aarch64": "arm64"}
# The Lambda runtime's packages: boto3 and its dependencies.
RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
RUNTIME_TOP = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
# What pip prints when it cannot reach an index (urllib3 / socket errors).
NETWORK_ERRORS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Connection refused",
    "ProxyError",
    "connection broken by",
)

UNKNOWN = f"arn:aws:iam::{lake.ACCOUNT}:user/old-contractor"
TRUSTED_USER = f"arn:aws:iam::{lake.ACCOUNT}:user/release-ana"

# Runs in the isolated interpreter: argv[1] is a JSON object of paths and the allowlist.
SMOKE = r"""
import json, sys
args = json.loads(sys.argv[1])
sys.path[:0] = [args["task"], args["runtime"]]
assert not [p for p in sys.path if "site-packages" in p], sys.path
import detector.handler  # powertools Logger and Metrics load here; the rest on first call
import aws_lambda_powertools, aws_xray_sdk, boto3, botocore, pyarrow, wrapt
from detector import engine
from detector.allowlist import Allowlist

allowlist = Allowlist.of(args["allowlist"])
run = engine.Run(allowlist)
for path in args["objects"]:
    with open(path, "rb") as f:
        run.add(engine.scan_object(f, path, allowlist))
# Every detection over one read, the second in a named zone (10:00 UTC is 11:00 in Berlin,
# before an 11:30 start): what DETECTIONS and BUSINESS_HOURS_* do in the function.
from detector import detections
active = detections.activate(
    list(detections.registry()),
    {"BUSINESS_HOURS_TIMEZONE": "Europe/Berlin", "BUSINESS_HOURS_START": "11:30"},
)
both = engine.Run(allowlist, active)
for path in args["objects"]:
    with open(path, "rb") as f:
        both.add(engine.scan_object(f, path, allowlist, active=active))
per_detection = {}
for f in both.findings():
    per_detection[f.detection.slug] = per_detection.get(f.detection.slug, 0) + f.count
modules = (aws_lambda_powertools, aws_xray_sdk, boto3, botocore, detector, pyarrow, wrapt)
print(json.dumps({
    "per_detection": per_detection,
    "files": {m.__name__: m.__file__ for m in modules},
    "rows": run.rows,
    "matched": run.matched,
    "trusted": run.trusted,
    "findings": [f.to_record() for f in run.findings()],
}))
"""


def _target() -> tuple[str, str]:
    if sys.platform != "linux" or platform.machine() not in ARCHES:
        pytest.skip(f"a manylinux package cannot be loaded on {sys.platform}/{platform.machine()}")
    return ARCHES[platform.machine()], f"{sys.version_info[0]}.{sys.version_info[1]}"


def _index_unreachable(dest: Path, arch: str, version: str) -> str | None:
    """Why pip cannot reach a package index, or None when it can.

    Asked only once the build has failed. A connection error counts even if the download then
    succeeds from a local mirror or find-links directory: the build needed the index.
    """
    machine = "aarch64" if arch == "arm64" else "x86_64"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            f"manylinux_2_28_{machine}",
            "--platform",
            f"manylinux2014_{machine}",
            "--implementation",
            "cp",
            "--python-version",
            version,
            "--timeout",
            "20",
            "--retries",
            "1",
            "--dest",
            str(dest),
            "pyarrow",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in (proc.stdout + proc.stderr).splitlines():
        if any(marker in line for marker in NETWORK_ERRORS):
            return line.strip()
    return None


def _runtime_dir(dest: Path) -> Path:
    """boto3 and its dependencies from this environment, and nothing else (symlinked)."""
    dest.mkdir()
    for name in RUNTIME:
        dist = importlib.metadata.distribution(name)
        tops = {
            Path(str(f)).parts[0]
            for f in dist.files or []
            if not str(f).startswith("..")
            and Path(str(f)).parts[0] != "__pycache__"
            and not Path(str(f)).parts[0].endswith((".dist-info", ".data"))
        }
        for top in sorted(tops):
            (dest / top).symlink_to(Path(str(dist.locate_file(top))))
    return dest


def test_package_zip_runs_the_detector_beside_the_runtime_boto3(tmp_path: Path) -> None:
    arch, version = _target()
    out = tmp_path / "lambda.zip"
    env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "PYTHON_VERSION")}
    cmd = [sys.executable, "scripts/package.py", "--arch", arch, "--python-version", version]
    cmd += ["--out", str(out), "--build-dir", str(tmp_path / "build")]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    print(proc.stdout)
    if proc.returncode != 0:
        reason = _index_unreachable(tmp_path / "probe", arch, version)
        if reason is not None:
            pytest.skip(f"pip cannot reach a package index: {reason}")
        pytest.fail(f"package.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr}")

    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        zf.extractall(tmp_path / "task")
    unzipped = sum(i.file_size for i in infos)
    print(
        f"package {arch}/{version}: {unzipped / MIB:.1f} MiB unzipped, "
        f"{out.stat().st_size / MIB:.1f} MiB zipped, {len(names)} files"
    )
    assert unzipped <= LAMBDA_LIMIT
    assert "detector/handler.py" in names and "pyarrow/__init__.py" in names
    bundled_runtime = [n for n in names if n.split("/", 1)[0] in RUNTIME_TOP]
    assert not bundled_runtime, bundled_runtime[:5]  # no boto3/, botocore/ ...
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith(("pyarrow/tests/", "pyarrow/include/"))]
    # Deterministic: sorted entries, fixed timestamps, plain file modes.
    assert names == sorted(names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 & 0o777 for i in infos} <= {0o644, 0o755}

    objects = []
    events = [
        lake.event(),  # the CI role's session: trusted by the ci-* glob
        lake.event(
            arn=UNKNOWN,
            principal_id="AIDAEXAMPLE",
            user_type="IAMUser",
            session_issuer=None,
            user_name="old-contractor",
        ),
        lake.event(arn=TRUSTED_USER, session_issuer=None, user_type="IAMUser"),  # exact entry
        lake.event(operation="GetObject", service="s3.amazonaws.com", arn=UNKNOWN),
    ]
    for ocsf in (2, 1):  # v2: request JSON via RE2 extract_regex; v1: map_lookup
        path = tmp_path / f"v{ocsf}.gz.parquet"
        lake.write_object(path, events, ocsf)
        objects.append(str(path))
    task, runtime = tmp_path / "task", _runtime_dir(tmp_path / "runtime")
    args = {
        "task": str(task),
        "runtime": str(runtime),
        "objects": objects,
        "allowlist": [TRUSTED_USER, f"arn:aws:iam::{lake.ACCOUNT}:role/ci-*"],
    }
    smoke = subprocess.run(
        [sys.executable, "-I", "-S", "-c", SMOKE, json.dumps(args)],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    result = json.loads(smoke.stdout.strip().splitlines()[-1])

    files = result["files"]
    for module in ("boto3", "botocore"):
        assert files[module].startswith(str(runtime) + os.sep), files
    for module in ("aws_lambda_powertools", "aws_xray_sdk", "detector", "pyarrow", "wrapt"):
        assert files[module].startswith(str(task) + os.sep), files
    assert (result["rows"], result["matched"], result["trusted"]) == (8, 6, 4)
    [finding] = result["findings"]
    assert finding["user"] == UNKNOWN
    assert finding["count"] == 2
    assert finding["repositories"] == ["app"] and finding["image_tags"] == ["v1"]
    assert finding["source_objects"] == sorted(objects)
    # Both detections from the package: the unknown user's two pushes; every push (three
    # principals, two objects) outside Berlin business hours starting 11:30.
    assert result["per_detection"] == {
        "ecr-upload-unknown-user": 2,
        "ecr-upload-outside-business-hours": 6,
    }
