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
    # The scan through S3 + SSM, the digest email, the JSON body and Security Hub read-back.
    assert "2 finding(s), 8 PutImage call(s)" in out
    assert "Subject: [MEDIUM] ECR push by unknown principal" in out
    assert "arn:aws:iam::111122223333:user/old-contractor" in out
    assert '"api.operation": "PutImage"' in out
    hub = out.split("AWS Security Hub findings, read back with GetFindings", 1)[1]
    assert hub.count("- Container uploaded from unknown user") == 2
    assert "(1 digest(s) published in all" in out  # redeliveries skipped by the state table
    assert "release-ana" not in out and "ci-deployer/build" not in out  # allowlisted: quiet
