"""ASL AWS Credential Access GetPasswordData (ESCU a79b607a, version 8, Anomaly).

ESCU: ``api.operation=GetPasswordData``, every call, grouped by caller and the ``instanceId``
of the request. ESCU's description speaks of counting the distinct instances, but its search
has no threshold: ported as searched, every call is reported (failed ones too), and the
instances asked for are listed in the email.
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "GetPasswordData"
SERVICE = "ec2.amazonaws.com"

DETECTION = _escu.detection(
    id="a79b607a-50cc-4704-bb9d-eff280cb78c2",
    slug="credential-access-getpassworddata",
    name="ASL AWS Credential Access GetPasswordData",
    version=8,
    escu_type="Anomaly",
    mitre={"T1110.001": "Password Guessing", "T1586.003": "Cloud Accounts"},
    description=(
        "The Windows administrator password of an EC2 instance was requested "
        "(GetPasswordData). The answer is the password encrypted with the instance's key "
        "pair: whoever also holds the private key can sign in to the instance as its "
        "administrator. Attackers ask for it across many instances."
    ),
    analytic_story=("AWS Identity and Access Management Account Takeover",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} is seen to make GetPasswordData API calls",
    resource=("instance", "instanceId", "instance"),
    headline="The administrator password of an EC2 instance was requested",
    verdict="PASSWORD DATA RETRIEVED",
    known_false_positives=(
        "Administrators fetching a new Windows instance's password in the console ('Get "
        "Windows password') or with the CLI, and tools that launch Windows instances."
    ),
    how_to_respond=(
        "Ask the principal's owner whether they needed the administrator password of the "
        "instances listed. If not: change the local administrator password on those instances "
        "(e.g. through Systems Manager), check who holds the key pair's private key, look for "
        "RDP sign-ins and security-group changes opening port 3389, and disable the caller's "
        "credentials until its owner explains."
    ),
    references=(
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetPasswordData.html",
        "https://stratus-red-team.cloud/attack-techniques/AWS/"
        "aws.credential-access.ec2-get-password-data/",
    ),
    examples=(
        Example(
            "an IAM user retrieves an instance's password data",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"instanceId": "i-0123456789abcdef0"},
        ),
        Example(
            "a refused GetPasswordData is still reported",
            reported=True,
            event=_escu.call(
                OPERATION, SERVICE, status="Failure", error_code="Client.UnauthorizedOperation"
            ),
            request={"instanceId": "i-0fedcba9876543210"},
        ),
        Example(
            "reading an instance's console output is not asking for its password",
            reported=False,
            event=_escu.call("GetConsoleOutput", SERVICE, **_escu.user("mallory")),
            request={"instanceId": "i-0123456789abcdef0"},
        ),
    ),
)
