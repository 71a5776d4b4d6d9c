"""ASL AWS UpdateLoginProfile (ESCU 5b3f63a3, version 8, TTP).

ESCU: ``api.operation=UpdateLoginProfile``, every call, grouped by caller. ESCU's description
speaks of a user updating the login profile "of another user", but its search never compares
the caller with the user acted on; ported as searched, every call is reported, failed ones
too. That is the evident intent anyway: a user changing their own console password calls
ChangePassword, so UpdateLoginProfile is nearly always someone setting the password of an IAM
user, which is how a principal with that right takes over another user. The email lists the
users whose login profile was changed.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "UpdateLoginProfile"
SERVICE = "iam.amazonaws.com"

DETECTION = _escu.detection(
    id="5b3f63a3-865b-4637-9941-f98bd1a50c0d",
    slug="updateloginprofile",
    name="ASL AWS UpdateLoginProfile",
    version=8,
    escu_type="TTP",
    mitre={"T1136.003": "Cloud Account"},
    description=(
        "The console password (login profile) of an IAM user was set or changed by "
        "UpdateLoginProfile. A principal allowed to do so can take over any such user: set a "
        "password it knows, sign in as that user and use the user's permissions."
    ),
    analytic_story=("AWS IAM Privilege Escalation",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} updated the login profile of another user",
    resource=("login_user", "userName", "user"),
    headline="The console password of an IAM user was changed",
    verdict="LOGIN PROFILE UPDATED",
    known_false_positives=(
        "Administrators resetting a user's console password at the user's request (often "
        "with passwordResetRequired), or tools that manage IAM users' passwords."
    ),
    how_to_respond=(
        "Ask the owner of the user acted on whether they asked for a password reset. If not: "
        "set a new password yourself and require a reset (or delete the login profile), check "
        "the user's MFA devices and access keys, look for ConsoleLogin events of that user "
        "since the change, and disable the caller's credentials until its owner explains."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateLoginProfile.html",
        "https://rhinosecuritylabs.com/aws/aws-privilege-escalation-methods-mitigation-part-2/",
    ),
    examples=(
        Example(
            "an IAM user sets another user's console password",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"userName": "alice", "passwordResetRequired": False},
        ),
        Example(
            "a role resets a user's password with a forced change",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request={"userName": "bob", "passwordResetRequired": True},
        ),
        Example(
            "a refused UpdateLoginProfile is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"userName": "admin"},
        ),
        Example(
            "a user changing their own password calls ChangePassword",
            reported=False,
            event=_escu.call(
                "ChangePassword", SERVICE, user_agent="AWS Internal", **_escu.user("alice")
            ),
            request=None,
        ),
    ),
)
