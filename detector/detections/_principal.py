""" "Check next" steps about the principal itself, for any detection: the exact access key to
disable, and for a role how to revoke the sessions already issued.

Only values of the shapes AWS gives them reach a command (an IAM user or role name, an access
key id); anything else is left to the reader, escaped, in the alert's own lines.
"""

from __future__ import annotations

import json
import re
from typing import Any

from detector.core.spec import Command, Step

_USER = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:user/(?:[!-~]*/)?(?P<name>[\w+=,.@-]{1,64})")
_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/(?:[!-~]*/)?(?P<name>[\w+=,.@-]{1,64})")
_LONG_TERM_KEY = re.compile(r"AKIA[A-Z0-9]{12,124}")
# The policy the IAM console's "Revoke active sessions" attaches: deny every session token
# issued before the given time.
_REVOKE = {
    "Version": "2012-10-17",
    "Statement": {
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateLessThan": {"aws:TokenIssueTime": "NOW"}},
    },
}


def steps(alert: Any, act: str = "push") -> list[Step]:
    """The key and session steps for ``alert``'s principal (none when nothing is known);
    ``act``: what the principal did, in "If the <act> was not expected"."""
    out: list[Step] = []
    who = alert.who()
    keys, _, _ = alert.sample("access_keys")
    user = _USER.fullmatch(who)
    long_term = [k for k in keys if _LONG_TERM_KEY.fullmatch(k)]
    if user and long_term:
        name = user["name"]
        out.append(
            Step(
                f"If the {act} was not expected, disable the access key it was signed with:",
                commands=(
                    Command(("aws", "iam", "list-access-keys"), (("--user-name", name),)),
                    *(
                        Command(
                            ("aws", "iam", "update-access-key"),
                            (
                                ("--user-name", name),
                                ("--access-key-id", key),
                                ("--status", "Inactive"),
                            ),
                        )
                        for key in long_term[:3]
                    ),
                ),
            )
        )
    role = _ROLE.fullmatch(who)
    if role:
        out.append(
            Step(
                f"If the {act} was not expected, revoke the role's sessions issued until now "
                '(what the IAM console\'s "Revoke active sessions" does): save the policy '
                "below as revoke.json with NOW replaced by the current UTC time "
                "(e.g. 2026-12-05T18:00:00Z), then:",
                commands=(
                    Command(
                        ("aws", "iam", "put-role-policy"),
                        (
                            ("--role-name", role["name"]),
                            ("--policy-name", "AWSRevokeOlderSessions"),
                            ("--policy-document", "file://revoke.json"),
                        ),
                    ),
                ),
                data=(json.dumps(_REVOKE, separators=(",", ":")),),
            )
        )
    return out
