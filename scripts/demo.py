"""`make demo`: write a small Security Lake sample (both schema versions) and scan it.

The sample lives under .demo/ (git-ignored) and is laid out as Security Lake lays out
CloudTrail management events, so the same command works on a real bucket copy.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from detector.cli import main
from tests import lake

ROOT = Path(".demo")
ACCOUNT = lake.ACCOUNT
T0 = lake.T0_MS
MINUTE = 60_000

ALLOWLIST = f"""\
# Principals trusted to push images. One ARN or glob per line.
# The CI role: covers every session of it (arn:aws:sts::…:assumed-role/ci-deployer/…).
arn:aws:iam::{ACCOUNT}:role/ci-deployer
# Builds run by AWS CodeBuild.
codebuild.amazonaws.com
# Release engineers, by glob.
arn:aws:iam::{ACCOUNT}:user/release-*
"""


def sample_events(version: int) -> list[dict[str, object]]:
    ci = [
        lake.event(
            time_ms=T0 + i * MINUTE,
            arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deployer/build-{i}",
            request_json=lake.put_image_request("payments/api", f"build-{100 + i}"),
        )
        for i in range(6)
    ]
    codebuild = [
        lake.event(
            time_ms=T0 + 3 * MINUTE,
            arn=None,
            principal_id=None,
            account=None,
            session_issuer=None,
            user_type="AWSService",
            invoked_by="codebuild.amazonaws.com",
            src_ip=None,
            src_domain="codebuild.amazonaws.com",
            user_agent="codebuild.amazonaws.com",
        )
    ]
    release = [
        lake.event(
            time_ms=T0 + 7 * MINUTE,
            arn=f"arn:aws:iam::{ACCOUNT}:user/release-ana",
            session_issuer=None,
            user_type="IAMUser",
            user_name="release-ana",
        )
    ]
    # What the detection is for: someone else publishing images.
    intruder = [
        lake.event(
            time_ms=T0 + (20 + i) * MINUTE + version * 1000,
            arn=f"arn:aws:iam::{ACCOUNT}:user/old-contractor",
            session_issuer=None,
            principal_id="AIDAEXAMPLECONTRACTOR",
            user_type="IAMUser",
            user_name="old-contractor",
            src_ip="203.0.113.66",
            user_agent="docker/20.10.7 go/go1.13.15 os/linux arch/amd64",
            status="Success" if i else "Failure",
            error_code=None if i else "ImageAlreadyExistsException",
            request_json=lake.put_image_request("payments/api", "latest"),
        )
        for i in range(3)
    ]
    unmanaged_service = [
        lake.event(
            time_ms=T0 + 42 * MINUTE,
            arn=None,
            principal_id=None,
            account=None,
            session_issuer=None,
            user_type="AWSService",
            invoked_by="ecr.amazonaws.com",
            src_ip=None,
            src_domain="ecr.amazonaws.com",
            user_agent="ecr.amazonaws.com",
            request_json=lake.put_image_request("mirror/nginx", "1.27"),
        )
    ]
    noise = [
        lake.event(operation=op, time_ms=T0 + i * MINUTE, request_json=None)
        for i, op in enumerate(["GetAuthorizationToken", "BatchGetImage", "DescribeImages"] * 5)
    ]
    return ci + codebuild + release + intruder + unmanaged_service + noise


def write_sample() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    for version in (1, 2):
        path = ROOT / "lake" / lake.key_for(version, name=f"demo-v{version}")
        path.parent.mkdir(parents=True, exist_ok=True)
        lake.write_object(path, sample_events(version), version)
        print(f"wrote {path}  (OCSF {'1.0.0-rc.2' if version == 1 else '1.1.0'})")
    (ROOT / "allowlist.txt").write_text(ALLOWLIST)
    print(f"wrote {ROOT / 'allowlist.txt'}\n")


if __name__ == "__main__":
    write_sample()
    args = ["scan", str(ROOT / "lake"), "--allowlist", str(ROOT / "allowlist.txt"), *sys.argv[1:]]
    print("$ ecr-upload-detector " + " ".join(args) + "\n")
    raise SystemExit(main(args))
