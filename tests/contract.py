"""Names users and scripts rely on, written down once for the tests (not imported from the code,
so a change in the code cannot silently change the contract too)."""

# The first keys of every finding in `scan --format jsonl`, the SNS JSON and ProductFields,
# named as in the Splunk search's output, in this order.
JSONL_KEYS = [
    "api.operation",
    "user",
    "actor.user.account.uid",
    "user_agent",
    "src_ip",
    "src_endpoint.domain",
    "region",
    "count",
    "firstTime",
    "lastTime",
]

# The first keys of every alert in the SNS message's JSON (`alerts`), in this order.
ALERT_KEYS = [
    "principal",
    "actor.user.account.uid",
    "count",
    "succeeded",
    "failed",
    "firstTime",
    "lastTime",
    "groups",
    "repositories",
    "image_tags",
    "user_agents",
    "src_ips",
    "sessions",
    "regions",
    "event_ids",
    "findings",
    "truncated",
]
# The alert samples, each `{"values": [...], "total": N}`.
SAMPLE_NAMES = ALERT_KEYS[8:15]
