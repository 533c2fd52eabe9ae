"""The base invariants the validator checks in Python say exactly what FHIRPath says.

Each predicate of :data:`server.fhir.invariants.COMPILED` runs beside fhirpathpy, evaluated as the
validator evaluates it, over every example the shipped packages carry (every resource, contained and
Bundle-entry resource, entry, Reference, Period and Quantity in them) and over hand-made edge cases;
wherever the predicate answers, its answer (report the invariant or not) must be FHIRPath's.
"""

from __future__ import annotations

import copy

import pytest

from server.fhir import invariants, profiles


def _fhirpath_reports(expr: str, value, resource: dict, root: dict, path: str = "") -> bool:
    """Whether the validator's FHIRPath evaluation reports the invariant (its result is [False]).

    Evaluated with the element path the validator gives (``path``): it is what lets FHIRPath resolve a
    choice type (an extension's ``value``); the base invariants navigate none and take none."""
    fn = profiles._compiled_expr(expr, path)
    assert fn is not None, expr
    try:
        return fn(value, {"resource": resource, "rootResource": root}) == [False]
    except Exception:
        return False


def _walk(value, resource: dict | None, path: str):
    """(node, enclosing resource, element path) for every object under ``value``."""
    if isinstance(value, dict):
        if isinstance(value.get("resourceType"), str):
            resource, path = value, value["resourceType"]
        yield value, resource, path
        for key, child in value.items():
            yield from _walk(child, resource, f"{path}.{key}")
    elif isinstance(value, list):
        for child in value:
            yield from _walk(child, resource, path)


def _targets(node: dict, path: str) -> set[str]:
    """The invariant families that apply to an object found at ``path``."""
    if "resourceType" in node:
        return {"dom", "bdl"} if node["resourceType"] == "Bundle" else {"dom"}
    if path.endswith("Bundle.entry"):
        return {"entry"}
    if path.endswith("Claim.item"):
        return {"pas-item"}
    found = set()
    if any(k in node for k in ("reference", "_reference", "identifier", "display")):
        found.add("ref")
    if any(k in node for k in ("start", "end", "_start", "_end")):
        found.add("per")
    if any(k in node for k in ("value", "code", "system", "comparator", "unit", "_code", "_comparator")):
        found.add("qty")
    return found


_FAMILY = {invariants.dom_2: "dom", invariants.dom_3: "dom", invariants.dom_4: "dom", invariants.dom_5: "dom",
           invariants.dom_6: "dom", invariants.bdl_1: "bdl", invariants.bdl_2: "bdl", invariants.bdl_3: "bdl",
           invariants.bdl_4: "bdl", invariants.bdl_7: "bdl", invariants.bdl_9: "bdl", invariants.bdl_10: "bdl",
           invariants.bdl_11: "bdl", invariants.bdl_12: "bdl", invariants.bdl_5: "entry", invariants.bdl_8: "entry",
           invariants.ref_1: "ref", invariants.per_1: "per", invariants.qty_3: "qty", invariants.sqty_1: "qty",
           invariants.pas_immediate_level_of_care: "pas-item"}
# The element path each family's invariants are declared on (and evaluated at), where they need one.
_PATH = {"pas-item": "Claim.item"}
_CT = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-certificationType"
_LOS = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-levelOfServiceCode"


def _claim_items() -> list[list]:
    """Claim.item extension lists around ImmediateLevelOfCare: certification type values of every
    shape (the CodeableConcept the extension defines, a Coding in its place, a code, a Quantity), with
    and without a level-of-service code, and malformed ones."""
    los = {"url": _LOS, "valueCodeableConcept": {"coding": [{"code": "U"}]}}
    values = [{"valueCodeableConcept": {"coding": [{"system": "https://codesystem.x12.org/005010/1322", "code": "1"}]}},
              {"valueCodeableConcept": {"coding": [{"code": "2"}]}}, {"valueCoding": {"code": "1"}},
              {"valueCoding": {"code": "2"}}, {"valueCoding": {"code": 1}}, {"valueCode": "1"},
              {"valueQuantity": {"value": 1, "code": "1"}}, {"_valueCode": {"extension": []}},
              {"valueCoding": {"code": "1"}, "valueCode": "1"}, {}, {"valueCoding": {}}]
    lists: list[list] = [[], [los], [{}], [None], [{"url": 7}], [{"url": _CT}]]
    for v in values:
        ct = {"url": _CT, **v}
        lists += [[ct], [ct, los], [los, ct], [ct, {"url": "http://example.org/other"}], [{**ct, "url": "http://example.org/x"}]]
    return lists

_NARRATIVE = {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}


def _edge_cases() -> list[dict]:
    """Roots that stress the predicates: empty objects, primitives carried only as ``_field``,
    ``null``s and wrong JSON types, contained resources with and without narrative and references."""
    patient = {"resourceType": "Patient", "id": "p"}
    contained_with_text = {"resourceType": "Practitioner", "id": "pr", "text": _NARRATIVE}
    cases: list[dict] = [
        {"resourceType": "Claim", "item": [{"sequence": 1, "extension": ext} for ext in _claim_items()]},
        {"resourceType": "Claim", "item": [{"sequence": 1, "extension": None}, {"sequence": 2}]},
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "text": {}},
        {"resourceType": "Patient", "text": {"status": "generated"}},
        {"resourceType": "Patient", "text": {"_div": {"extension": [{"url": "x", "valueString": "y"}]}}},
        {"resourceType": "Patient", "text": None},
        {"resourceType": "Patient", "text": _NARRATIVE},
        {"resourceType": "Patient", "contained": []},
        {"resourceType": "Patient", "contained": [{}]},
        {"resourceType": "Patient", "contained": None},
        {"resourceType": "Patient", "contained": [patient]},
        {"resourceType": "Patient", "contained": [contained_with_text],
         "generalPractitioner": [{"reference": "#pr"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner"}],
         "generalPractitioner": [{"reference": "#"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr"}],
         "generalPractitioner": [{"reference": "#other"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr"}],
         "generalPractitioner": [{"_reference": {"extension": [{"url": "x", "valueString": "#pr"}]}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr", "contained": [patient]}],
         "generalPractitioner": [{"reference": "#pr"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr", "contained": []}],
         "generalPractitioner": [{"reference": "#pr"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr",
                                                   "meta": {"versionId": "1"}}], "generalPractitioner": [{"reference": "#pr"}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr",
                                                   "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr",
                                                   "meta": {"_versionId": {"extension": [{"url": "x", "valueString": "y"}]}}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr", "meta": {}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr",
                                                   "meta": {"security": [{"code": "R"}]}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": "pr", "meta": {"security": []}}]},
        {"resourceType": "Patient", "contained": [{"resourceType": "Practitioner", "id": 7}]},
        {"resourceType": "Patient", "generalPractitioner": [{}]},
        {"resourceType": "Patient", "generalPractitioner": [{"reference": "#x"}]},
        {"resourceType": "Patient", "generalPractitioner": [{"reference": "Practitioner/x"}]},
        {"resourceType": "Patient", "generalPractitioner": [{"identifier": {"value": "1"}}]},
        {"resourceType": "Patient", "generalPractitioner": [{"display": "Dr X"}]},
        {"resourceType": "Patient", "generalPractitioner": [{"reference": None}]},
        {"resourceType": "Patient", "generalPractitioner": [{"reference": 5}]},
        {"resourceType": "Patient", "generalPractitioner": [{"_reference": {"extension": [{"url": "x", "valueString": "y"}]}}]},
        {"resourceType": "Observation", "valuePeriod": {}, "effectivePeriod": {"start": "2024", "end": "2023"}},
        {"resourceType": "Observation", "effectivePeriod": {"start": "2024-01-01"}},
        {"resourceType": "Observation", "effectivePeriod": {"end": "2024-01-01", "_start": {"extension": []}}},
        {"resourceType": "Observation", "valueQuantity": {"value": 1, "code": "mg"}},
        {"resourceType": "Observation", "valueQuantity": {"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}},
        {"resourceType": "Observation", "valueQuantity": {"_code": {"extension": []}, "comparator": "<"}},
        {"resourceType": "Observation", "valueQuantity": {"code": None, "comparator": None}},
    ]
    bundle_types = ["document", "message", "transaction", "transaction-response", "batch", "batch-response",
                    "history", "searchset", "collection", None, 3]
    entry_sets = [
        [],
        None,
        [{}],
        [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Composition"}}],
        [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "MessageHeader"}, "request": {"method": "POST"}}],
        [{"fullUrl": "urn:uuid:1", "resource": copy.deepcopy(patient)},
         {"fullUrl": "urn:uuid:1", "resource": copy.deepcopy(patient)}],
        [{"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "meta": {"versionId": "1"}}},
         {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "meta": {"versionId": "2"}}}],
        [{"fullUrl": "http://x/Patient/1/_history/2", "response": {"status": "200"}}],
        [{"request": {"method": "GET"}, "search": {"mode": "match"}}],
        [{"resource": {"resourceType": "Patient"}, "response": {"status": "201"}}],
        [{"_fullUrl": {"extension": []}, "resource": {}}],
        [{"fullUrl": 4, "resource": patient}],
        [{"resource": None}],
    ]
    for btype in bundle_types:
        for entries in entry_sets:
            bundle: dict = {"resourceType": "Bundle"}
            if btype is not None:
                bundle["type"] = btype
            if entries is not None:
                bundle["entry"] = copy.deepcopy(entries)
            cases.append(bundle)
            cases.append({**bundle, "total": 2})
            cases.append({**bundle, "identifier": {"system": "urn:x", "value": "1"}, "timestamp": "2024-01-01T00:00:00Z"})
            cases.append({**bundle, "identifier": {"value": "1"}, "_timestamp": {"extension": []}})
    return cases


def _corpus() -> list[dict]:
    return [res for _, _, res in profiles.registry().examples] + _edge_cases()


@pytest.fixture(scope="module")
def nodes():
    found = []
    for root in _corpus():
        for node, resource, path in _walk(root, None, ""):
            if resource is None:
                continue
            families = _targets(node, path)
            if families:
                found.append((node, resource, root, families))
    return found


@pytest.mark.parametrize("expr", sorted(invariants.COMPILED), ids=lambda e: invariants.COMPILED[e].__name__ + ":" + e[:40])
def test_each_compiled_invariant_agrees_with_fhirpath(expr, nodes):
    predicate = invariants.COMPILED[expr]
    family = _FAMILY[predicate]
    answered = 0
    for node, resource, root, families in nodes:
        if family not in families:
            continue
        said = predicate(node, resource, root)
        if said is None:
            continue
        answered += 1
        assert (said is False) == _fhirpath_reports(expr, node, resource, root, _PATH.get(family, "")), (expr, node)
    assert answered, f"{predicate.__name__} never answered on the corpus"


def test_the_compiled_invariants_settle_the_shipped_examples_themselves():
    """On well-formed resources and Bundles the Python checks answer, so FHIRPath is not run for them
    (the datatype invariants are checked on whatever object has their element names, so not here;
    ``dom-3`` leaves a contained resource referenced by canonical, as a QuestionnaireResponse's
    Questionnaire is, to FHIRPath)."""
    unanswered = []
    for root in [res for _, _, res in profiles.registry().examples]:
        for node, resource, path in _walk(root, None, ""):
            if resource is None:
                continue
            for expr, predicate in invariants.COMPILED.items():
                if _FAMILY[predicate] in _targets(node, path) and _FAMILY[predicate] in ("dom", "bdl", "entry") \
                        and predicate is not invariants.dom_3 \
                        and predicate(node, resource, root) is None:
                    unanswered.append((predicate.__name__, path))
    assert not unanswered


def _patient_profile_with(key: str, expression: str) -> profiles.Profile:
    """The base Patient profile with its ``key`` constraint given ``expression`` (a private copy)."""
    profile = copy.deepcopy(profiles.compile_profile("Patient"))
    profile.root.constraints = [(k, sev, expression if k == key else expr, human)
                                for k, sev, expr, human in profile.root.constraints]
    return profile


def _run_keys(resource: dict, profile: profiles.Profile) -> set[str]:
    run = profiles._Run(resource, None)
    run.resource(resource, profile, "Patient", resource)
    return {c["code"] for i in run.issues for c in i["details"]["coding"]}


def test_a_profile_that_redefines_a_key_has_its_own_expression_evaluated():
    """Matching is on the expression text: a ``dom-6`` with other text goes to FHIRPath."""
    patient = {"resourceType": "Patient", "text": _NARRATIVE}
    assert "dom-6" not in _run_keys(patient, _patient_profile_with("dom-6", "text.`div`.exists()"))
    assert "dom-6" in _run_keys(patient, _patient_profile_with("dom-6", "text.`div`.exists() and id.exists()"))


def test_a_resource_without_narrative_still_gets_the_dom_6_warning():
    outcome = profiles.validate({"resourceType": "Patient", "id": "p"})
    assert [(i["severity"], i["expression"]) for i in outcome["issue"]
            if i["details"]["coding"][0]["code"] == "dom-6"] == [("warning", ["Patient"])]


def test_a_contained_resource_with_a_version_fails_dom_4():
    patient = {"resourceType": "Patient", "text": _NARRATIVE,
               "contained": [{"resourceType": "Practitioner", "id": "pr", "meta": {"versionId": "2"}}],
               "generalPractitioner": [{"reference": "#pr"}]}
    assert {"dom-4"} <= profiles.issue_keys(profiles.validate(patient))


def test_an_invariant_of_a_nested_element_is_evaluated_there():
    """Invariants below a resource's root (Parameters.parameter inv-1, Bundle.entry bdl-5) are
    evaluated on the element, typed by its path, so choice elements such as value[x] resolve."""
    from server.fhir import profiles

    both = {"resourceType": "Parameters", "parameter": [{"name": "a", "valueString": "x", "resource": {"resourceType": "Patient"}}]}
    one = {"resourceType": "Parameters", "parameter": [{"name": "a", "valueString": "x"}]}
    assert "inv-1" in profiles.issue_keys(profiles.validate(both))
    assert "inv-1" not in profiles.issue_keys(profiles.validate(one))
    empty_entry = {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:7f1e2a3b-0000-4000-8000-000000000001"}]}
    assert "bdl-5" in profiles.issue_keys(profiles.validate(empty_entry))
