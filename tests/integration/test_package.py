"""The Lambda artifact that ships, run by the runtime's own CPython version.

``scripts/package.py --arch x86_64`` builds the exact artifact of ``make package ARCH=x86_64``
for the template's runtime (``python3.13``) from the runtime part of uv.lock. The test unzips it
and runs it with a CPython of that version (found on PATH or under pyenv), isolated (``-I``) and
without site-packages (``-S``): it sees only the unzipped package and a directory holding boto3 and
its dependencies (the Lambda runtime's share, which the package must not bundle). It imports
``detector.handler`` and scans Security Lake objects of both OCSF versions to the same findings as
the installed project scans them in this process.

Without a CPython of the runtime's version the test is skipped, unless
``REQUIRE_RUNTIME_PYTHON=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from detector import detections
from detector.analysis import engine
from detector.core.allowlist import Allowlist
from tests import lake

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
LAMBDA_LIMIT = 250 * MIB
ARCHES = {"x86_64": "x86_64", "aarch64": "arm64"}
# The Lambda runtime's packages: boto3 and its dependencies.
RUNTIME = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
RUNTIME_TOP = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
UV = ROOT / ".tools" / "uv" / "bin" / "uv"

sys.path.insert(0, str(ROOT / "scripts"))
import package  # noqa: E402  (scripts/package.py: the build under test)

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
from detector.analysis import engine
from detector.core.allowlist import Allowlist

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
    "all_findings": [f.to_record() for f in both.findings()],
    "version": "%d.%d" % sys.version_info[:2],
}))
"""


def _runtime_version() -> str:
    return package.default_python_version()  # the template's Runtime


def _target() -> tuple[str, str]:
    if sys.platform != "linux" or platform.machine() not in ARCHES:
        pytest.skip(f"a manylinux package cannot be loaded on {sys.platform}/{platform.machine()}")
    return ARCHES[platform.machine()], _runtime_version()


def _runtime_python(version: str) -> str:
    found = package.find_python(version)
    if found is None:
        message = f"no CPython {version} here (PATH, pyenv) to run the Lambda runtime's tree"
        if os.environ.get("REQUIRE_RUNTIME_PYTHON") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def _build(tmp_path: Path, arch: str, version: str, name: str) -> tuple[Path, str]:
    out = tmp_path / name / "lambda.zip"
    env = {k: v for k, v in os.environ.items() if k not in ("ARCH", "PYTHON_VERSION")}
    cmd = [sys.executable, "scripts/package.py", "--arch", arch, "--python-version", version]
    cmd += ["--out", str(out), "--build-dir", str(tmp_path / name / "build"), "--uv", str(UV)]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    print(proc.stdout)
    assert proc.returncode == 0, f"package.py failed:\n{proc.stdout[-4000:]}{proc.stderr}"
    return out, proc.stdout


def _locked_runtime() -> set[str]:
    """name==version of the runtime distributions uv.lock pins for the Lambda (minus boto3's)."""
    proc = subprocess.run(
        [
            *(str(UV), "export", "--frozen", "--no-default-groups", "--no-emit-project"),
            *("--format", "requirements-txt", "--no-annotate", "--no-header"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    pins = set()
    for line in proc.stdout.splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match and package.canonical(match.group(1)) not in package.RUNTIME_PROVIDED:
            pins.add(f"{package.canonical(match.group(1))}=={match.group(2)}")
    assert pins, proc.stdout
    return pins


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


def test_make_package_twice_gives_the_same_wheels_from_the_lock(tmp_path: Path) -> None:
    """The same lock builds the same artifact: the same wheels, and byte for byte the same zip."""
    arch, version = _target()
    first, _ = _build(tmp_path, arch, version, "one")
    second, _ = _build(tmp_path, arch, version, "two")
    wheels = [Path(str(out) + ".wheels.txt").read_text().splitlines() for out in (first, second)]
    assert wheels[0] == wheels[1]
    assert set(wheels[0]) == _locked_runtime()
    digests = [hashlib.sha256(out.read_bytes()).hexdigest() for out in (first, second)]
    assert digests[0] == digests[1]


def test_shipped_tree_runs_on_the_runtime_python_to_the_installed_findings(
    tmp_path: Path,
) -> None:
    arch, version = _target()
    python = _runtime_python(version)
    out, stdout = _build(tmp_path, arch, version, "ship")
    assert "self-check: pyarrow" in stdout, stdout[-2000:]  # ran with the runtime's CPython

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
    abi = "cpython-" + version.replace(".", "")
    assert any(n.startswith("pyarrow/lib.") and abi in n for n in names), "not the runtime's ABI"
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
        [python, "-I", "-S", "-c", SMOKE, json.dumps(args)],
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

    assert result["version"] == version
    # The installed project (this interpreter, the dev venv) scans the same objects alike.
    allowlist = Allowlist.of(args["allowlist"])
    run = engine.Run(allowlist)
    for path in objects:
        with open(path, "rb") as f:
            run.add(engine.scan_object(f, path, allowlist))
    assert result["findings"] == json.loads(json.dumps([f.to_record() for f in run.findings()]))
    active = detections.activate(
        list(detections.registry()),
        {"BUSINESS_HOURS_TIMEZONE": "Europe/Berlin", "BUSINESS_HOURS_START": "11:30"},
    )
    both = engine.Run(allowlist, active)
    for path in objects:
        with open(path, "rb") as f:
            both.add(engine.scan_object(f, path, allowlist, active=active))
    assert result["all_findings"] == json.loads(
        json.dumps([f.to_record() for f in both.findings()])
    )
