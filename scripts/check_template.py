"""Validate template.yaml offline: the SAM translation, as `sam validate` does it.

`cfn-lint` (>= 1.54) no longer reports SAM translation errors, so both run in `make check`.
Needs no credentials and no network: CodeUri is replaced by a placeholder S3 URI (as
`sam validate` does) and no managed policies are looked up.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


class _NoManagedPolicies:
    """The template names no AWS managed policies, so none need fetching."""

    def load(self) -> dict[str, str]:
        return {}


def translate(path: Path = TEMPLATE) -> dict[str, Any]:
    """The CloudFormation that SAM makes of the template (raises on translation errors)."""
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template = yaml_parse(path.read_text())
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://placeholder-bucket/lambda.zip"
    result: dict[str, Any] = transform(template, {}, _NoManagedPolicies())
    return result


def main() -> int:
    try:
        out = translate()
    except Exception as exc:  # report any translation failure as one clear line
        print(f"template.yaml: SAM translation failed: {exc}", file=sys.stderr)
        return 1
    types = sorted({r["Type"] for r in out["Resources"].values()})
    print(
        f"template.yaml: SAM translation ok, {len(out['Resources'])} resources ({', '.join(types)})"
    )
    if "--print" in sys.argv:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
