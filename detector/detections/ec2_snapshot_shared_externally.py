"""ASL AWS EC2 Snapshot Shared Externally (ESCU 00af8f7f, version 7, TTP).

ESCU: ``api.operation=ModifySnapshotAttribute``, the request JSON's
``createVolumePermission.add.items{}.group`` read with ``spath`` and kept when it is ``all``
(the snapshot was made public), grouped by caller and request. Ported as written: failed
calls are reported too (ESCU has no status filter).

Limitation (kept from ESCU): despite "externally" in the name, only public sharing is seen.
Sharing with one other account (an ``add`` item with a ``userId``) is how a snapshot is
usually exfiltrated to an attacker's account, and neither ESCU's search nor this port reports
it; nor is removing public access (``remove``).
"""

from __future__ import annotations

from typing import Any

from detector.core.requestjson import eq
from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "ModifySnapshotAttribute"
SERVICE = "ec2.amazonaws.com"
SNAPSHOT = "snap-0123456789abcdef0"


def _request(change: str, *items: dict[str, str], snapshot: str = SNAPSHOT) -> dict[str, Any]:
    """ModifySnapshotAttribute's requestParameters as CloudTrail records them."""
    return {
        "snapshotId": snapshot,
        "attributeType": "CREATE_VOLUME_PERMISSION",
        "createVolumePermission": {change: {"items": list(items)}},
    }


DETECTION = _escu.detection(
    id="00af8f7f-e004-446b-9bba-2732f717ae27",
    slug="ec2-snapshot-shared-externally",
    name="ASL AWS EC2 Snapshot Shared Externally",
    version=7,
    escu_type="TTP",
    mitre={"T1537": "Transfer Data to Cloud Account"},
    description=(
        "An EBS snapshot was made public (ModifySnapshotAttribute adding the create-volume "
        "permission for the group all). Anyone with an AWS account can then copy the disk and "
        "read it: a quick way to take a whole volume out of the account."
    ),
    analytic_story=("Suspicious Cloud Instance Activities", "Data Exfiltration"),
    operations=(OPERATION,),
    service=SERVICE,
    message="AWS EC2 snapshot from user {user} is shared publicly",
    resource=("snapshot", "snapshotId", "snapshot"),
    request_test=eq("createVolumePermission.add.items.group", "all"),
    headline="An EBS snapshot was made public",
    verdict="SNAPSHOT MADE PUBLIC",
    known_false_positives=(
        "Publishing a snapshot on purpose (a public dataset or a vendor image); such snapshots "
        "should hold nothing private, and their owners are few and known."
    ),
    how_to_respond=(
        "Make the snapshot private at once (aws ec2 modify-snapshot-attribute --snapshot-id "
        "<snapshot> --attribute createVolumePermission --operation-type remove --group-names "
        "all), then ask the principal's owner why it was shared. Treat the disk's data as "
        "exposed: find the volume and instance it came from (describe-snapshots), rotate "
        "secrets stored on it, revoke the principal's sessions and keys, and look for other "
        "snapshots or AMIs it shared and other calls from the source IP."
    ),
    references=(
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifySnapshotAttribute.html",
    ),
    remedy=_escu.Remedy(
        "Make the snapshot private again (anyone may have copied it since):",
        ("aws", "ec2", "modify-snapshot-attribute"),
        "--snapshot-id",
        r"snap-[0-9a-f]{8,17}",
        (
            ("--attribute", "createVolumePermission"),
            ("--operation-type", "remove"),
            ("--group-names", "all"),
        ),
    ),
    examples=(
        Example(
            "an IAM user makes a snapshot public",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request("add", {"group": "all"}),
        ),
        Example(
            "a refused attempt to make a snapshot public is still reported",
            reported=True,
            event=_escu.call(
                OPERATION, SERVICE, status="Failure", error_code="Client.UnauthorizedOperation"
            ),
            request=_request("add", {"group": "all"}),
        ),
        Example(
            "public among several permissions added is reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request=_request("add", {"userId": "444455556666"}, {"group": "all"}),
        ),
        Example(
            "sharing with one other account is not reported (as in ESCU)",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request("add", {"userId": "444455556666"}),
        ),
        Example(
            "removing public access is not reported",
            reported=False,
            event=_escu.call(OPERATION, SERVICE),
            request=_request("remove", {"group": "all"}),
        ),
        Example(
            "making an AMI public is not this detection's",
            reported=False,
            event=_escu.call("ModifyImageAttribute", SERVICE),
            request={
                "imageId": "ami-0123456789abcdef0",
                "launchPermission": {"add": {"items": [{"group": "all"}]}},
            },
        ),
    ),
)
