"""ASL AWS Multi-Factor Authentication Disabled (ESCU 4d2df5e0, version 12, TTP).

ESCU: ``api.operation=DeleteVirtualMFADevice OR api.operation=DeactivateMFADevice``, every
call, grouped by caller. Ported as written: failed calls are reported too.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = ("DeleteVirtualMFADevice", "DeactivateMFADevice")
SERVICE = "iam.amazonaws.com"

DETECTION = _escu.detection(
    id="4d2df5e0-1092-4817-88a8-79c7fa054668",
    slug="multi-factor-authentication-disabled",
    name="ASL AWS Multi-Factor Authentication Disabled",
    version=12,
    escu_type="TTP",
    mitre={
        "T1556.006": "Multi-Factor Authentication",
        "T1586.003": "Cloud Accounts",
        "T1621": "Multi-Factor Authentication Request Generation",
    },
    description=(
        "An IAM user's MFA device was deactivated (DeactivateMFADevice) or a virtual MFA "
        "device was deleted (DeleteVirtualMFADevice). Without MFA a stolen password is enough "
        "to sign in: an attacker removes it to keep using an account, or to enrol a device "
        "of their own."
    ),
    analytic_story=("AWS Identity and Access Management Account Takeover",),
    operations=OPERATIONS,
    service=SERVICE,
    message="User {user} has disabled Multi-Factor authentication",
    resource=("mfa_serial", "serialNumber", "MFA device"),
    headline="MFA was disabled for an IAM user",
    verdict="MFA DISABLED",
    known_false_positives=(
        "Administrators resetting MFA for a user who lost or replaced a device (usually "
        "followed by EnableMFADevice for a new one), and users leaving the organization."
    ),
    how_to_respond=(
        "Ask the user whose device it was whether they asked for the reset. If not, treat the "
        "account as taken over: disable its console password and access keys, revoke its "
        "sessions, check for a new MFA device enrolled since (CreateVirtualMFADevice, "
        "EnableMFADevice) and review what the caller and the user did afterwards."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeactivateMFADevice.html",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_DeleteVirtualMFADevice.html",
    ),
    examples=(
        Example(
            "an IAM user deactivates another user's MFA device",
            reported=True,
            event=_escu.call("DeactivateMFADevice", SERVICE, **_escu.user("mallory")),
            request={"userName": "alice", "serialNumber": f"{_escu.ARN}:mfa/alice"},
        ),
        Example(
            "a virtual MFA device is deleted",
            reported=True,
            event=_escu.call("DeleteVirtualMFADevice", SERVICE, **_escu.user("alice")),
            request={"serialNumber": f"{_escu.ARN}:mfa/alice"},
        ),
        Example(
            "a refused DeactivateMFADevice is still reported",
            reported=True,
            event=_escu.call(
                "DeactivateMFADevice", SERVICE, status="Failure", error_code="AccessDenied"
            ),
            request={"userName": "admin", "serialNumber": f"{_escu.ARN}:mfa/admin"},
        ),
        Example(
            "enabling an MFA device is not disabling one",
            reported=False,
            event=_escu.call("EnableMFADevice", SERVICE, **_escu.user("alice")),
            request={"userName": "alice", "serialNumber": f"{_escu.ARN}:mfa/alice-phone"},
        ),
    ),
)
