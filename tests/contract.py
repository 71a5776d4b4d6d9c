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
