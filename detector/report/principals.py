"""Who an alert is about: the principal of a finding, and the key of its alert.

The principal of a finding, in order:
1. for an assumed-role session, the session issuer (the role): the session name is chosen by
   the caller and must not multiply alerts; when no issuer was recorded, the role ARN is
   derived from the session ARN;
2. for a federated user (``sts:GetFederationToken``), the session issuer (the IAM user who
   minted it): the caller chooses the federated name, so it must neither multiply alerts nor
   be trusted; with no issuer recorded, all federated users of the account are one principal;
3. the caller ARN;
4. with no caller ARN: the session issuer, else
5. the calling AWS service (``actor.invoked_by``), else
6. the principal id (``principal id AIDA…``; a role session's id without its session name), so
   callers recorded without an ARN (type ``AWSAccount``: another account's principal) are
   never merged with each other (``Finding.anon`` keeps them apart below the alert too);
7. the source domain (AWS services that call with no identity);
8. ``UNKNOWN_PRINCIPAL``.

Pure: no AWS calls.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from detector.analysis.findings import Finding

UNKNOWN_PRINCIPAL = "(unknown principal)"

_FEDERATED_USER = re.compile(
    r"arn:(?P<partition>[a-z0-9-]+):sts::(?P<account>\d{12}):federated-user/.*", re.DOTALL
)
# How a principal known only by its principal id is named (callers recorded without an ARN).
PRINCIPAL_ID = "principal id"

_ASSUMED_ROLE = re.compile(
    r"arn:(?P<partition>[a-z0-9-]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/.*",
    re.DOTALL,
)


@dataclass(frozen=True)
class AlertKey:
    detection_id: str
    account: str | None
    principal: str
    # A threshold detection's time bucket (``Finding.bucket``): each bucket is its own alert,
    # counted across objects in the state table. None for every other detection.
    bucket: int | None = None

    @property
    def id(self) -> str:
        """Stable digest of the key: the state table's and Security Hub's name for the alert.
        ``json.dumps`` keeps a missing account (``null``) apart from an empty one."""
        parts: list[Any] = [self.detection_id, self.account, self.principal]
        if self.bucket is not None:
            parts.append(self.bucket)
        raw = json.dumps(parts)
        return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def principal_of(finding: Finding) -> str:
    """The alert principal of a finding (see the module docstring and ``principal_kind``)."""
    user = finding.user
    # Empty strings are no names (a hostile or broken record can hold them).
    issuers = [i for i in finding.session_issuers.sorted() if i]
    if user:
        session = _ASSUMED_ROLE.fullmatch(user)
        if session is not None:
            role = session["role"]
            # The issuer of this session: its ARN ends with the role name (after any path).
            matching = [i for i in issuers if i.rsplit("/", 1)[-1] == role]
            if matching:
                return matching[0]
            return f"arn:{session['partition']}:iam::{session['account']}:role/{role}"
        federated = _FEDERATED_USER.fullmatch(user)
        if federated is not None:
            # The name after federated-user/ is whatever the caller of GetFederationToken
            # chose: the principal is the IAM user (or root) who minted it, its issuer.
            minted = [i for i in issuers if _in_account(i, federated["account"])]
            if minted:
                return minted[0]
            return (
                f"arn:{federated['partition']}:sts::{federated['account']}:federated-user/* "
                "(issuer not recorded)"
            )
        return user
    if issuers:
        return issuers[0]
    invoked = [i for i in finding.invoked_by.sorted() if i]
    if invoked:
        return invoked[0]
    ids = [i for i in ([finding.anon] if finding.anon else finding.principal_ids.sorted()) if i]
    if ids:
        return f"{PRINCIPAL_ID} {_unique_id(ids[0])}"
    domain = finding.field("src_domain")
    if domain:
        return domain
    return UNKNOWN_PRINCIPAL


def _unique_id(principal_id: str) -> str:
    """A principal id without the name after its first ``:`` (``AROA…:session`` → ``AROA…``,
    ``ACCOUNT:federated-name`` → ``ACCOUNT``): that part is a session or federated-user name
    the caller chose, and must not make a principal of its own (the full ids stay in the
    alert's ``principal_ids``)."""
    head, sep, _ = principal_id.partition(":")
    return head if sep and head else principal_id


def _in_account(arn: str, account: str) -> bool:
    return arn.startswith("arn:") and arn.split(":", 5)[4:5] == [account]


def key_of(finding: Finding) -> AlertKey:
    return AlertKey(
        finding.detection.id, finding.field("account"), principal_of(finding), finding.bucket
    )
