"""ASL AWS SAML Update identity provider (ESCU 635c26cc, version 7, TTP).

ESCU: ``api.operation=UpdateSAMLProvider``, every call, grouped by caller. Ported as written:
failed calls are reported too (an attempt to swap the federation's signing metadata is news
even when it was refused).
"""

from __future__ import annotations

from detector.core.spec import Example
from detector.detections import _escu

OPERATION = "UpdateSAMLProvider"
SERVICE = "iam.amazonaws.com"
PROVIDER = f"{_escu.ARN}:saml-provider/Okta"
METADATA = '<?xml version="1.0"?><md:EntityDescriptor entityID="http://www.okta.com/exk1">'

DETECTION = _escu.detection(
    id="635c26cc-0fd1-4098-8ec9-824bf9544b11",
    slug="saml-update-identity-provider",
    name="ASL AWS SAML Update identity provider",
    version=7,
    escu_type="TTP",
    mitre={"T1078": "Valid Accounts"},
    description=(
        "The metadata of an IAM SAML identity provider was replaced (UpdateSAMLProvider). The "
        "metadata holds the certificate AWS trusts to sign SAML assertions: whoever controls "
        "the matching key can sign in to any role that trusts the provider, as anyone "
        "(a Golden SAML backdoor)."
    ),
    analytic_story=("Cloud Federated Credential Abuse",),
    operations=(OPERATION,),
    service=SERVICE,
    message="User {user} updated the SAML provider",
    resource=("saml_provider", "sAMLProviderArn", "SAML provider"),
    headline="An IAM SAML identity provider was updated",
    verdict="SAML PROVIDER UPDATED",
    known_false_positives=(
        "Identity administrators rotating the identity provider's signing certificate (Okta, "
        "Entra ID, AD FS) or re-uploading its metadata."
    ),
    how_to_respond=(
        "Ask the identity team whether the provider's signing certificate was rotated just "
        "now. If not: fetch the current metadata (aws iam get-saml-provider --saml-provider-arn "
        "<arn>) and compare its certificate with the one your identity provider shows; if it "
        "differs, upload the genuine metadata again, revoke the sessions of the roles that "
        "trust the provider, disable the caller's credentials, and review AssumeRoleWithSAML "
        "sign-ins since the change."
    ),
    references=(
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateSAMLProvider.html",
        "https://www.cisa.gov/news-events/cybersecurity-advisories/aa21-008a",
    ),
    examples=(
        Example(
            "an IAM user replaces a SAML provider's metadata",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, **_escu.user("mallory")),
            request={"sAMLProviderArn": PROVIDER, "sAMLMetadataDocument": METADATA},
        ),
        Example(
            "a refused UpdateSAMLProvider is still reported",
            reported=True,
            event=_escu.call(OPERATION, SERVICE, status="Failure", error_code="AccessDenied"),
            request={"sAMLProviderArn": PROVIDER, "sAMLMetadataDocument": METADATA},
        ),
        Example(
            "reading a SAML provider is not updating it",
            reported=False,
            event=_escu.call("GetSAMLProvider", SERVICE, **_escu.user("mallory")),
            request={"sAMLProviderArn": PROVIDER},
        ),
    ),
)
