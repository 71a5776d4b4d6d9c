"""ASL AWS Create Access Key (ESCU 81a9f2fe, version 7, Hunting).

ESCU: ``api.operation=CreateAccessKey``, every call, grouped by caller. ESCU's description
speaks of a key made "for another user", but its search does not compare the caller with the
key's user, so every key creation is listed. Ported as written: a key a user makes for
themselves is reported too, and so are failed calls.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "CreateAccessKey"
SERVICE = "iam.amazonaws.com"

DETECTION = _escu.detection(
    id="81a9f2fe-1697-473c-af1d-086b0d8b63c8",
    slug="create-access-key",
    name="ASL AWS Create Access Key",
    version=7,
    escu_type="Hunting",
    mitre={"T1136.003": "Cloud Account"},
    description=(
        "A long-lived IAM access key was created (CreateAccessKey). A new key is a credential "
        "that works from anywhere until it is deleted: an attacker who can mint one for any "
        "user, above all a more privileged one, keeps access after the first foothold is gone."
    ),
    analytic_story=("AWS IAM Privilege Escalation", "Scattered Lapsus$ Hunters"),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has created an IAM access key",
    resource=("key_user", "userName", "user"),
    headline="An IAM access key was created",
    verdict="ACCESS KEY CREATED",
    known_false_positives=(
        "Administrators issuing keys to new users or service accounts, and users rotating "
        "their own keys (ESCU's search does not tell these apart)."
    ),
    how_to_respond=(
        "Ask the key user's owner whether the key was expected. If not, deactivate it at once "
        "(aws iam update-access-key --status Inactive), then delete it; look at what the key "
        "and the creating principal did since (CloudTrail by access key id), and revoke the "
        "creating principal's credentials if it is not trusted."
    ),
    references=("https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateAccessKey.html",),
    examples=(
        Example(
            "an IAM user creates a key for another user",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"userName": "admin-breakglass"},
        ),
        Example(
            "a user rotating their own key is listed too",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("alice")),
            request={"userName": "alice"},
        ),
        Example(
            "a refused CreateAccessKey is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"userName": "deploy-bot"},
        ),
        Example(
            "deleting an access key is not creating one",
            reported=False,
            event=_escu.call("DeleteAccessKey", SERVICE, **_escu.user("alice")),
            request={"userName": "alice", "accessKeyId": "AKIAIOSFODNN7EXAMPLE"},
        ),
    ),
)
