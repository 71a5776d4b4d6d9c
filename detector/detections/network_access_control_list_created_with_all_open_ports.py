"""ASL AWS Network Access Control List Created with All Open Ports (ESCU a2625034, version 9,
TTP).

ESCU: ``api.operation`` CreateNetworkAclEntry or ReplaceNetworkAclEntry with
``status=Success``; the request JSON read with ``spath`` and kept when ``ruleAction=allow``,
``egress=false``, ``aclProtocol=-1`` (every protocol, so every port) and
``cidrBlock=0.0.0.0/0``: an inbound rule letting the whole IPv4 internet in. Grouped by caller,
network ACL and CIDR. Ported with one widening: only successful calls, and the same rule
for IPv6 (``ipv6CidrBlock`` ``::/0``), which ESCU does not read although it opens the network
just as wide (an attacker would choose it for that); protocol ``all`` is taken as ``-1``.

Limitation (kept from ESCU): an allow-all rule for one protocol over every port (TCP 0-65535)
is not seen. Splunk compares the values without regard to case; CloudTrail records them in the
lower case tested here.
"""

from __future__ import annotations

from typing import Any

from detector.core.requestjson import all_of, any_of, eq
from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = ("CreateNetworkAclEntry", "ReplaceNetworkAclEntry")
SERVICE = "ec2.amazonaws.com"
ACL = "acl-0123456789abcdef0"

predicate, sql_predicate = _escu.status_is("Success")


def _request(**changes: Any) -> dict[str, Any]:
    """Create/ReplaceNetworkAclEntry's requestParameters as CloudTrail records them (an
    inbound allow-all rule unless ``changes`` say otherwise)."""
    return {
        "networkAclId": ACL,
        "ruleNumber": 100,
        "egress": False,
        "ruleAction": "allow",
        "icmpTypeCode": {},
        "portRange": {},
        "aclProtocol": "-1",
        "cidrBlock": "0.0.0.0/0",
    } | changes


DETECTION = _escu.detection(
    id="a2625034-c2de-44fc-b45c-7bac9c4a7974",
    slug="network-access-control-list-created-with-all-open-ports",
    name="ASL AWS Network Access Control List Created with All Open Ports",
    version=9,
    escu_type="TTP",
    mitre={"T1686.001": "Cloud Firewall"},
    description=(
        "A network ACL entry was created or replaced that lets every protocol and port in from "
        "anywhere (inbound, allow, protocol -1, 0.0.0.0/0). It removes the subnet-level "
        "firewall for every instance in the subnets the ACL covers."
    ),
    analytic_story=("AWS Network ACL Activity",),
    operations=OPERATIONS,
    service=SERVICE,
    message="User {user} has created a network ACL entry with all ports open to 0.0.0.0/0",
    resource=("network_acl", "networkAclId", "network ACL"),
    predicate=predicate,
    sql_predicate=sql_predicate,
    predicate_columns=("status",),
    request_test=all_of(
        eq("ruleAction", "allow"),
        eq("egress", "false"),
        eq("aclProtocol", "-1", "all"),
        any_of(eq("cidrBlock", "0.0.0.0/0"), eq("ipv6CidrBlock", "::/0", "0::/0", "::0/0")),
    ),
    deviations=(
        "The IPv6 rule ::/0 counts as 0.0.0.0/0 does, and protocol all as -1: ESCU reads "
        "only the IPv4 CIDR, so an IPv6 rule opens everything unreported.",
    ),
    headline="A network ACL was opened to every port from anywhere",
    verdict="ACL OPENED TO ALL",
    known_false_positives=(
        "The default network ACL of a new VPC already allows everything; teams that rely on "
        "security groups alone may write the same rule into their own ACLs (templates, "
        "Terraform modules), which should then come from a known pipeline role."
    ),
    how_to_respond=(
        "Find the ACL and its subnets (aws ec2 describe-network-acls --network-acl-ids <acl>). "
        "If the principal's owner did not mean to open it, delete or replace the entry "
        "(delete-network-acl-entry --network-acl-id <acl> --ingress --rule-number <n>), check "
        "the security groups of instances in those subnets for the same opening, revoke the "
        "principal's sessions and keys, and look for other calls from the source IP."
    ),
    references=(
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateNetworkAclEntry.html",
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ReplaceNetworkAclEntry.html",
    ),
    remedy=_escu.Remedy(
        "The ACL's entries now (remove the allow-all one with delete-network-acl-entry):",
        ("aws", "ec2", "describe-network-acls"),
        "--network-acl-ids",
        r"acl-[0-9a-f]{8,17}",
    ),
    examples=(
        Example(
            "an IAM user adds an inbound allow-all entry",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request=_request(),
        ),
        Example(
            "replacing an entry with allow-all is reported",
            reported=True,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request=_request(ruleNumber=90),
        ),
        Example(
            "a refused entry is not reported (ESCU keeps successes only)",
            reported=False,
            event=_escu.call(
                OPERATIONS[0], SERVICE, status="Failure", error_code="Client.UnauthorizedOperation"
            ),
            request=_request(),
        ),
        Example(
            "an outbound allow-all entry is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request=_request(egress=True),
        ),
        Example(
            "an entry for TCP 443 from anywhere is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_request(aclProtocol="6", portRange={"from": 443, "to": 443}),
        ),
        Example(
            "a deny-all entry is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request=_request(ruleAction="deny"),
        ),
        Example(
            "the same rule for IPv6 (::/0) is reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request={k: v for k, v in _request().items() if k != "cidrBlock"}
            | {"ipv6CidrBlock": "::/0", "ruleNumber": 101},
        ),
        Example(
            "allow-all from one IPv6 range is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE),
            request={k: v for k, v in _request().items() if k != "cidrBlock"}
            | {"ipv6CidrBlock": "2001:db8::/32"},
        ),
        Example(
            "allow-all from the VPC's own range is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request=_request(cidrBlock="10.0.0.0/16"),
        ),
    ),
)
