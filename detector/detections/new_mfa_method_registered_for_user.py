"""ASL AWS New MFA Method Registered For User (ESCU 33ae0931, version 14, TTP).

ESCU: ``api.operation=CreateVirtualMFADevice``, every call, grouped by caller. Ported as
written: failed calls are reported too. CreateVirtualMFADevice makes the device (its secret
seed is returned to the caller); EnableMFADevice then ties it to a user. ESCU watches the first
step only, so the caller is named, not necessarily the user the device ends up on; the email
lists the device names.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "CreateVirtualMFADevice"
SERVICE = "iam.amazonaws.com"

DETECTION = _escu.detection(
    id="33ae0931-2a03-456b-b1d7-b016c5557fbd",
    slug="new-mfa-method-registered-for-user",
    name="ASL AWS New MFA Method Registered For User",
    version=14,
    escu_type="TTP",
    mitre={"T1556.006": "Multi-Factor Authentication"},
    description=(
        "A virtual MFA device was created in IAM (CreateVirtualMFADevice). An attacker who "
        "holds a user's password or keys registers an MFA device of their own to keep access, "
        "and to pass MFA checks, after the stolen credentials are noticed."
    ),
    analytic_story=("AWS Identity and Access Management Account Takeover",),
    operations=(OPERATION,),
    service=SERVICE,
    message="A new virtual MFA device was created by user {user}",
    resource=("mfa_device", "virtualMFADeviceName", "MFA device"),
    headline="A new virtual MFA device was created",
    verdict="MFA DEVICE CREATED",
    known_false_positives=(
        "New users setting up MFA for the first time, users replacing a lost phone, and "
        "administrators provisioning MFA devices for others."
    ),
    how_to_respond=(
        "Ask the user the device is for (by its name) whether they just set up MFA. If not: "
        "list the user's MFA devices (aws iam list-mfa-devices --user-name <user>), deactivate "
        "and delete the unknown one, reset the user's console password and access keys, and "
        "review what the caller and that user did since, from which source IPs."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateVirtualMFADevice.html",
        "https://aws.amazon.com/blogs/security/you-can-now-assign-multiple-mfa-devices-in-iam/",
    ),
    examples=(
        Example(
            "an IAM user creates a virtual MFA device",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("alice")),
            request={"virtualMFADeviceName": "alice-phone", "path": "/"},
        ),
        Example(
            "a role creates a virtual MFA device for another user",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request={"virtualMFADeviceName": "bob", "path": "/"},
        ),
        Example(
            "a refused CreateVirtualMFADevice is still reported",
            reported=True,
            event=_escu.call(
                OPERATION, SERVICE, status="Failure", error_code="EntityAlreadyExists"
            ),
            request={"virtualMFADeviceName": "alice-phone"},
        ),
        Example(
            "enabling an existing device is not creating one",
            reported=False,
            event=_escu.call("EnableMFADevice", SERVICE, **_escu.user("alice")),
            request={
                "userName": "alice",
                "serialNumber": f"{_escu.ARN}:mfa/alice-phone",
            },
        ),
    ),
)
