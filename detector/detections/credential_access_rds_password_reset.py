"""ASL AWS Credential Access RDS Password reset (ESCU d15e9bd9, version 9, TTP).

ESCU: ``api.operation`` ModifyDBInstance or ModifyDBCluster, the request JSON read with
``spath`` and kept when it has a ``masterUserPassword`` (a new master password was set),
grouped by caller and request. Ported as written: failed calls are reported too (ESCU has no
status filter). CloudTrail never records the password itself, only a mask in its place
(``****`` in AWS's older samples, ``HIDDEN_DUE_TO_SECURITY_REASONS`` in newer logs): the key's
presence is the test, whatever its value.

The sampled resource is the DB instance (``dBInstanceIdentifier``); a ModifyDBCluster call
names its cluster in ``dBClusterIdentifier`` instead, which stays in the request (the CloudTrail
lookup in the alert finds it), and the instance sample is then empty.

Limitation (kept from ESCU): a change to an RDS-managed password (``manageMasterUserPassword``,
``rotateMasterUserPassword``) carries no ``masterUserPassword`` and is not reported.
"""

from __future__ import annotations

from detector.core.requestjson import present
from detector.core.spec import Example
from detector.detections import _escu

OPERATIONS = ("ModifyDBInstance", "ModifyDBCluster")
SERVICE = "rds.amazonaws.com"
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"

DETECTION = _escu.detection(
    id="d15e9bd9-ef64-4d84-bc04-f62955a9fee8",
    slug="credential-access-rds-password-reset",
    name="ASL AWS Credential Access RDS Password reset",
    version=9,
    escu_type="TTP",
    mitre={"T1110": "Brute Force", "T1586.003": "Cloud Accounts"},
    description=(
        "The master user password of an RDS DB instance or Aurora cluster was reset "
        "(ModifyDBInstance or ModifyDBCluster with a new masterUserPassword). Whoever sets it "
        "can log in to the database as its most privileged user, without knowing the old "
        "password: a direct way to the data."
    ),
    analytic_story=(
        "AWS Identity and Access Management Account Takeover",
        "Scattered Lapsus$ Hunters",
    ),
    operations=OPERATIONS,
    service=SERVICE,
    message="User {user} is seen to reset the master password of a database",
    resource=("db_instance", "dBInstanceIdentifier", "DB instance"),
    request_test=present("masterUserPassword"),
    headline="An RDS master user password was reset",
    verdict="DB PASSWORD RESET",
    known_false_positives=(
        "Database administrators resetting a lost master password or rotating it by hand; "
        "infrastructure-as-code that sets the password on every apply."
    ),
    how_to_respond=(
        "Ask the database owner whether the reset was planned. If not, set a new master "
        "password at once (or turn on RDS-managed passwords: modify-db-instance "
        "--manage-master-user-password), check the database's connection and audit logs for "
        "logins since the reset, look for snapshots or copies made of it "
        "(describe-db-snapshots), revoke the principal's sessions and keys, and look for other "
        "calls from the source IP."
    ),
    references=(
        "https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ModifyDBInstance.html",
        "https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ModifyDBCluster.html",
        "https://repost.aws/knowledge-center/reset-master-user-password-rds",
    ),
    examples=(
        Example(
            "an IAM user resets an instance's master password",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request={
                "dBInstanceIdentifier": "payments-db",
                "masterUserPassword": HIDDEN,
                "applyImmediately": True,
            },
        ),
        Example(
            "a cluster's master password reset is reported",
            reported=True,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request={
                "dBClusterIdentifier": "orders-aurora",
                "masterUserPassword": HIDDEN,
                "applyImmediately": True,
            },
        ),
        Example(
            "a refused reset with the older mask is still reported",
            reported=True,
            event=_escu.call(OPERATIONS[0], SERVICE, status="Failure", error_code="AccessDenied"),
            request={
                "dBInstanceIdentifier": "payments-db",
                "masterUserPassword": "****",
                "applyImmediately": False,
            },
        ),
        Example(
            "resizing an instance is not reported",
            reported=False,
            event=_escu.call(OPERATIONS[0], SERVICE, **_escu.user("mallory")),
            request={
                "dBInstanceIdentifier": "payments-db",
                "dBInstanceClass": "db.r6g.large",
                "applyImmediately": True,
            },
        ),
        Example(
            "handing the password to Secrets Manager is not reported (as in ESCU)",
            reported=False,
            event=_escu.call(OPERATIONS[1], SERVICE),
            request={
                "dBClusterIdentifier": "orders-aurora",
                "manageMasterUserPassword": True,
                "applyImmediately": True,
            },
        ),
        Example(
            "creating an instance with a password is not this detection's",
            reported=False,
            event=_escu.call("CreateDBInstance", SERVICE),
            request={
                "dBInstanceIdentifier": "scratch-db",
                "dBInstanceClass": "db.t3.micro",
                "engine": "postgres",
                "masterUsername": "postgres",
                "masterUserPassword": HIDDEN,
                "allocatedStorage": 20,
            },
        ),
    ),
)
