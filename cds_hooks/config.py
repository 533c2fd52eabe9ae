"""CRD service settings, built from the environment's variables (:mod:`server.settings`) when the app
is built.

| variable | default | meaning |
|---|---|---|
| ``PRECERT_CRD_REQUIRE_JWT`` | on in production, off in sandbox | refuse hook calls without a valid EHR JWT |
| ``PRECERT_CRD_TRUSTED_EHRS`` | none | JSON list ``[{"iss": ..., "jku": ...}]`` or a path to such a file; ``jwks`` (a JWK Set) may replace ``jku`` |
| ``PRECERT_CRD_JWT_ALGS`` | ``ES384,RS384`` | accepted signature algorithms (asymmetric only) |
| ``PRECERT_CRD_DEFAULT_VERSION`` | ``2.0`` | CRD version answered when the client names none (``2.0`` = CRD 2.0.1 output) |
| ``PRECERT_CRD_REQUIRE_PAYER_ID`` | on in production | CRD 2.2 hook-13: 400 unless the one Coverage's payor identifier is this payer's |
| ``PRECERT_CRD_DTR`` | ``auto`` | ``auto``: DTR is available when Precert holds the Questionnaire; ``on``/``off`` force it |
| ``PRECERT_CRD_FHIR_TIMEOUT`` | ``3`` | seconds per query to the EHR's FHIR server |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cds_hooks.coverage_info import V20, V22, CRDVersion
from server.settings import variables

DEMO_EHR_ISS = "https://ehr.sandbox.precert.example.org"
DEMO_EHR_JWKS_FILE = Path(__file__).resolve().parent / "demo_ehr_jwks.json"
ASYMMETRIC = {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}


def parse_version(value: str | None) -> CRDVersion | None:
    """'2.0'/'2.0.1' -> 2.0.1 behaviour; '2.1'/'2.2'/'2.2.x' -> 2.2 behaviour; anything else None."""
    if not isinstance(value, str):
        return None
    v = value.strip()
    if v in ("2.0", "2.0.0", "2.0.1"):
        return V20
    if v in ("2.1", "2.1.0", "2.2", "2.2.0", "2.2.1"):
        return V22
    return None


@dataclass
class TrustedEHR:
    iss: str
    jku: str | None = None
    jwks: dict | None = None
    demo: bool = False


@dataclass
class CRDConfig:
    require_jwt: bool = False
    trusted: list[TrustedEHR] = field(default_factory=list)
    algorithms: frozenset[str] = frozenset({"ES384", "RS384"})
    default_version: CRDVersion = V20
    require_payer_identifier: bool = False
    dtr: str = "auto"
    fhir_timeout: float = 3.0
    max_body_bytes: int = 5 * 1024 * 1024
    clock_skew: int = 60
    max_token_lifetime: int = 3600
    sandbox: bool = True

    @classmethod
    def from_env(cls, mode: str = "sandbox", env: Mapping[str, str] | None = None) -> "CRDConfig":
        v = variables(env)
        production = mode == "production"
        trusted: list[TrustedEHR] = []
        raw = v.crd_trusted_ehrs
        if raw:
            if not raw.startswith("["):
                raw = Path(raw).read_text(encoding="utf-8")
            for item in json.loads(raw):
                if not isinstance(item, dict) or not isinstance(item.get("iss"), str):
                    raise ValueError("PRECERT_CRD_TRUSTED_EHRS entries need an 'iss'")
                trusted.append(TrustedEHR(item["iss"], item.get("jku"), item.get("jwks")))
        if not production:
            trusted.append(TrustedEHR(DEMO_EHR_ISS, None, json.loads(DEMO_EHR_JWKS_FILE.read_text()), demo=True))
        algs = frozenset(v.crd_jwt_algs) & ASYMMETRIC
        return cls(
            require_jwt=production if v.crd_require_jwt is None else v.crd_require_jwt,
            trusted=trusted,
            algorithms=algs or frozenset({"ES384", "RS384"}),
            default_version=parse_version(v.crd_default_version) or V20,
            require_payer_identifier=production if v.crd_require_payer_id is None else v.crd_require_payer_id,
            dtr=v.crd_dtr if v.crd_dtr in ("auto", "on", "off") else "auto",
            fhir_timeout=v.crd_fhir_timeout,
            sandbox=not production,
        )
