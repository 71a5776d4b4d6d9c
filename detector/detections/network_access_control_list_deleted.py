"""ASL AWS Network Access Control List Deleted (ESCU e010ddf5, version 10, Anomaly).

ESCU: ``api.operation=DeleteNetworkAclEntry`` with ``status=Success``, the request JSON's
``egress`` read with ``spath`` and kept when it is ``false`` (an inbound entry), grouped by
caller and network ACL. Ported as written: only successful calls, only inbound entries.
Despite the name, deleting a whole ACL (DeleteNetworkAcl) is not watched, by ESCU or here.
"""

from __future__ import annotations

from detector.core.requestjson import eq
from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "DeleteNetworkAclEntry"
SERVICE = "ec2.amazonaws.com"
ACL = "acl-0123456789abcdef0"

predicate, sql_predicate = _escu.status_is("Success")


def _request(egress: bool, rule: int = 100, acl: str = ACL) -> dict[str, object]:
    """DeleteNetworkAclEntry's requestParameters as CloudTrail records them."""
    return {"networkAclId": acl, "ruleNumber": rule, "egress": egress}


DETECTION = _escu.detection(
    id="e010ddf5-e9a5-44e5-bdd6-0c919ba8fc8b",
    slug="network-access-control-list-deleted",
    name="ASL AWS Network Access Control List Deleted",
    version=10,
    escu_type="Anomaly",
    mitre={"T1686.001": "Cloud Firewall"},
    description=(
        "An inbound entry was deleted from a network ACL (DeleteNetworkAclEntry, egress "
        "false). Removing a deny or a narrow allow rule changes what reaches the subnets the "
        "ACL covers; an attacker does it to open a path in."
    ),
    analytic_story=("AWS Network ACL Activity", "Scattered Lapsus$ Hunters"),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} has successfully deleted an inbound network ACL entry",
    resource=("network_acl", "networkAclId", "network ACL"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("status",),
    request_test=eq("egress", "false"),
    headline="An inbound network ACL entry was deleted",
    verdict="ACL ENTRY DELETED",
    known_false_positives=(
        "Network changes by administrators or infrastructure-as-code (Terraform, "
        "CloudFormation) rewriting ACL rules; tearing down a VPC deletes its entries too."
    ),
    how_to_respond=(
        "Look at what the ACL allows now (aws ec2 describe-network-acls --network-acl-ids "
        "<acl>) and which subnets it covers. If the principal's owner cannot account for the "
        "change, put the entry back (create-network-acl-entry with the rule number from the "
        "request), revoke the principal's sessions and keys, and look for other network "
        "changes (security groups, routes) and other calls from the source IP."
    ),
    references=(
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteNetworkAclEntry.html",
    ),
    examples=(
        Example(
            "an IAM user deletes an inbound entry",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request(egress=False),
        ),
        Example(
            "a pipeline role deletes an inbound deny rule",
            reported=True,
            event=_escu.call(OPERATION, SERVICE),
            request=_request(egress=False, rule=50, acl="acl-0fedcba9876543210"),
        ),
        Example(
            "deleting an outbound entry is not reported",
            reported=False,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request=_request(egress=True),
        ),
        Example(
            "a refused deletion is not reported (ESCU keeps successes only)",
            reported=False,
            event=_escu.call(
                OPERATION, SERVICE, status="Failure", error_code="Client.UnauthorizedOperation"
            ),
            request=_request(egress=False),
        ),
        Example(
            "deleting a whole network ACL is not this detection's",
            reported=False,
            event=_escu.call("DeleteNetworkAcl", SERVICE),
            request={"networkAclId": ACL},
        ),
    ),
)
