"""What importing the Lambda handler costs over a bare interpreter (the cold-start import).

Runs ``python -c pass`` and ``python -c "import detector.handler"`` in fresh interpreters, with
the detector's and powertools' environment variables unset and pandas and numpy hidden (the
Lambda package has neither; pyarrow imports numpy when it finds it), and prints the best wall
time of each and the difference. The handler's first invocation loads the rest (pyarrow,
boto3, X-Ray): ``--first-call`` adds a run that also imports what the first invocation
imports, to show what the import no longer pays for and the first invocation does.

Usage: ``PYTHONPATH=. python benchmarks/coldstart.py [--runs 7] [--first-call]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 300.0

HIDE = (
    "import sys\n"
    "class _Absent:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('pandas', 'numpy'):\n"
    "            raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, _Absent())\n"
)
STATEMENTS = {
    "bare": "pass",
    "import": HIDE + "import detector.handler",
    # What the first invocation loads on top of the import.
    "import+first-call": HIDE
    + "import detector.handler, detector.app.pipeline, detector.app.sinks, detector.aws.s3, "
    "detector.aws.ssm, detector.aws.sns, detector.aws.securityhub, detector.aws.dynamodb\n"
    "from aws_lambda_powertools import Tracer\n"
    "Tracer(service='x')\n",
}
PREFIXES = ("ALLOWLIST_", "FINDINGS_", "SECURITY_HUB_", "STATE_TABLE", "DEDUP_", "POWERTOOLS_")


def best_ms(statement: str, runs: int, env: dict[str, str]) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", statement], check=True, env=env, cwd=ROOT)
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs of each; the best is kept")
    ap.add_argument("--first-call", action="store_true", help="also time the first call's imports")
    args = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    names = ["bare", "import"] + (["import+first-call"] if args.first_call else [])
    times = {name: best_ms(STATEMENTS[name], args.runs, env) for name in names}
    bare = times["bare"]
    for name, ms in times.items():
        extra = "" if name == "bare" else f"  (+{ms - bare:.0f} ms over bare)"
        print(f"{name:<18} {ms:7.0f} ms{extra}")
    cost = times["import"] - bare
    verdict = "MET" if cost <= GOAL_MS else "MISSED"
    print(f"goal: import detector.handler <= {GOAL_MS:.0f} ms over bare: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
