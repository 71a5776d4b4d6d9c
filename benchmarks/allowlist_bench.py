"""Allowlist at organisation scale: cold-start parse time and per-object matching cost.

    PYTHONPATH=. python benchmarks/allowlist_bench.py [--rows 1000000] [--repeat 5]

Contenders, side by side:
- today's typical list: 5 entries (a CI role glob, two users, a service, a source domain);
- 5,000 exact entries over 500 accounts (ten principals each), as an SSM path would hold them;
- the same principals as 500 account-list entries (``arn:aws:iam::{org}:role/team-N``) over
  one 500-account list, expanded at parse time;
- 5,000 globs (``…:assumed-role/team-N-*/*`` per account): the RE2 alternation's worst case.

For each: parse time (what a cold start pays, the SSM reads aside) and ``trust_mask`` over the
identity columns of ``--rows`` rows (what each object's predicate pays), best of ``--repeat``.
Rows are assumed-role sessions of the listed accounts, half of them trusted.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from detector.core.allowlist import Allowlist

ACCOUNTS = [f"{100000000000 + i * 7919:012d}" for i in range(500)]


def lists() -> dict[str, tuple[str, dict[str, tuple[str, ...]]]]:
    exact = "\n".join(
        f"arn:aws:iam::{a}:role/team-{j}-deployer" for a in ACCOUNTS for j in range(10)
    )
    over_list = "\n".join(f"arn:aws:iam::{{org}}:role/team-{j}-deployer" for j in range(10))
    globs = "\n".join(
        f"arn:aws:sts::{a}:assumed-role/team-{j}-*/*" for a in ACCOUNTS for j in range(10)
    )
    today = "\n".join(
        [
            "arn:aws:sts::111122223333:assumed-role/ci-*/*",
            "arn:aws:iam::111122223333:user/release-ana",
            "arn:aws:iam::111122223333:user/release-bo",
            "codebuild.amazonaws.com",
            "ecr.amazonaws.com",
        ]
    )
    org = {"org": tuple(ACCOUNTS)}
    return {
        "today: 5 entries": (today, {}),
        "5,000 exact entries, 500 accounts": (exact, {}),
        "10 entries over a 500-account list": (over_list, org),
        "5,000 globs, 500 accounts": (globs, {}),
    }


def columns(rows: int) -> tuple[pa.Array, pa.Array, pa.Array, pa.Array]:
    rng = random.Random(7)
    users, issuers = [], []
    for i in range(rows):
        account = ACCOUNTS[rng.randrange(len(ACCOUNTS))]
        team = rng.randrange(20)  # teams 10-19 are not listed: half untrusted
        role = f"team-{team}-deployer"
        users.append(f"arn:aws:sts::{account}:assumed-role/{role}/build-{i % 977}")
        issuers.append(f"arn:aws:iam::{account}:role/{role}")
    nulls = pa.nulls(rows, pa.string())
    return pa.array(users), pa.array(issuers), nulls, nulls


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    cols = columns(args.rows)
    print(f"allowlist: parse and match {args.rows:,} rows (best of {args.repeat})")
    print(f"{'contender':<38} {'entries':>8} {'parse ms':>9} {'match ms':>9} {'trusted':>9}")
    for name, (text, accounts) in lists().items():
        parse_s, allowlist = best(lambda t=text, a=accounts: Allowlist.parse(t, accounts=a), 3)
        assert isinstance(allowlist, Allowlist)
        match_s, mask = best(lambda al=allowlist: al.trust_mask(*cols), args.repeat)
        trusted = int(pc.sum(mask).as_py() or 0)
        print(
            f"{name:<38} {len(allowlist.entries):>8,} {parse_s * 1000:>9.1f} "
            f"{match_s * 1000:>9.1f} {trusted:>9,}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
