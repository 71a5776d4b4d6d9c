"""`make demo` end to end: the handler against moto's HTTP server (ThreadedMotoServer).

Unlike the in-process mocks, this goes through a real HTTP endpoint via AWS_ENDPOINT_URL, as a
user's emulator or a real region would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_whole_pipeline_against_a_moto_server():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "raised" not in out
    # The scan through S3 + SSM (Splunk groups: one per session of the legacy role)...
    assert "4 finding(s), 12 PutImage call(s)" in out
    # ...one message rolled up per principal: the role, not its two sessions.
    subject = "ECR push by unknown principal: old-contractor (111122223333) (+2 more)"
    assert f"Subject: [MEDIUM] {subject}" in out
    assert "PRINCIPAL 1 OF 3: IMAGE PUSHED" in out
    assert "PRINCIPAL 3 OF 3: PUSH ATTEMPTED" in out
    assert "Principal: arn:aws:iam::111122223333:role/legacy-deployer" in out
    assert "3 alert(s) from 4 finding(s)" in out
    assert '"principal": "arn:aws:iam::111122223333:user/old-contractor"' in out
    assert '"api.operation": "PutImage"' in out
    hub = out.split("AWS Security Hub findings, read back with GetFindings", 1)[1]
    assert hub.count("- Container uploaded from unknown user") == 3
    assert "(1 message(s) published in all" in out  # redeliveries skipped by the state table
    assert "release-ana" not in out and "ci-deployer/build" not in out  # allowlisted: quiet
