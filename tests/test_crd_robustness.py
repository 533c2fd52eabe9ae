"""Never a 500: hook calls whose parts have the wrong types, nulls or hostile values anywhere."""

from __future__ import annotations

import copy
import json
import random

import pytest

from tests.support import CRD_FIXTURES
from tests.test_crd_conformance import inferno_bodies

ODD_VALUES = [None, 0, -1, 1.5, True, "", "x" * 300, "<script>alert(1)</script>", [], {}, [None], {"reference": None},
              {"resourceType": "OperationOutcome"}, {"resourceType": 7}, "Patient/", "/", "Type/id/_history/", "%00", "{{context.x}}"]


def paths(node, prefix=()):
    """Every (path) inside a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def set_at(doc, path, value):
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


def bodies():
    out = [json.loads((CRD_FIXTURES / n).read_text()) for n in ("CRDServiceRequest.json", "CRDServiceRequest4.json")]
    return out + inferno_bodies()


@pytest.mark.parametrize("seed", range(8))
def test_mutated_requests_never_cause_a_server_error(client, seed):
    rng = random.Random(seed)
    for base in bodies():
        all_paths = [p for p in paths(base) if p and p[0] in ("context", "prefetch", "extension", "hookInstance", "fhirServer")]
        for _ in range(6):
            body = copy.deepcopy(base)
            for path in rng.sample(all_paths, min(3, len(all_paths))):
                try:
                    set_at(body, path, copy.deepcopy(rng.choice(ODD_VALUES)))
                except (KeyError, IndexError, TypeError):
                    pass
            body.pop("fhirServer", None) if rng.random() < 0.5 else None
            body.pop("fhirAuthorization", None)
            r = client.post(f"/cds-services/{base['hook']}-crd", json=body)
            assert r.status_code < 500, (seed, r.status_code, r.text[:300])
            assert r.status_code in (200, 400, 412, 422), r.text[:300]
