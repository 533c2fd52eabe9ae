"""The profile validator proves itself on the IG packages' own examples and on one broken constraint of each kind."""

from __future__ import annotations

import copy

import pytest

from server.fhir import profiles

PAS201 = "hl7.fhir.us.davinci-pas-2.0.1"
PAS221 = "hl7.fhir.us.davinci-pas-2.2.1"
CLAIM = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-claim"

# Examples the official validator also flags; empty: every shipped example validates clean.
ALLOWED_EXAMPLE_ERRORS: dict[tuple[str, str], str] = {}


def _example(package: str, suffix: str) -> dict:
    for pkg, name, res in profiles.registry().examples:
        if pkg == package and name.endswith(suffix):
            return copy.deepcopy(res)
    raise LookupError(suffix)


def _ids():
    return [f"{pkg}:{name.rsplit('/', 1)[1]}" for pkg, name, _ in profiles.registry().examples]


@pytest.mark.parametrize("index", range(len(profiles.registry().examples)), ids=_ids())
def test_every_shipped_example_meets_the_profiles_it_claims(index):
    package, name, resource = profiles.registry().examples[index]
    outcome = profiles.validate(resource, package=package)
    errors = profiles.errors(outcome)
    if (package, name) in ALLOWED_EXAMPLE_ERRORS:
        pytest.skip(ALLOWED_EXAMPLE_ERRORS[(package, name)])
    assert errors == []


def test_the_shipped_packages_include_the_r4_base_and_terminology():
    reg = profiles.registry()
    assert reg.structure("Claim") is not None
    assert reg.get("http://terminology.hl7.org/CodeSystem/claim-type") is not None


def _claim_bundle(package=PAS201):
    return _example(package, "Bundle-ReferralAuthorizationBundleExample.json")


def _keys(resource, package=PAS201, profile=None):
    return profiles.issue_keys(profiles.validate(resource, profile=profile, package=package))


def test_a_missing_required_element_fails_cardinality():
    bundle = _claim_bundle()
    del bundle["entry"][0]["resource"]["patient"]
    assert "cardinality" in _keys(bundle)


def test_too_many_repetitions_fail_cardinality():
    bundle = _claim_bundle()
    claim = bundle["entry"][0]["resource"]
    claim["identifier"] = claim["identifier"] * 2
    assert "cardinality" in _keys(bundle)


def test_a_value_of_the_wrong_datatype_fails_type():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["created"] = 20240101
    assert "type" in _keys(bundle)


def test_a_malformed_date_time_fails_type():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["created"] = "yesterday"
    assert "type" in _keys(bundle)


def test_a_choice_type_the_element_does_not_allow_fails_type():
    bundle = _claim_bundle()
    diagnosis = bundle["entry"][0]["resource"]["diagnosis"][0]
    diagnosis["diagnosisString"] = "fever"
    del diagnosis["diagnosisCodeableConcept"]
    assert "type" in _keys(bundle)


def test_an_element_no_definition_has_fails_unknown_element():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["colour"] = "blue"
    outcome = profiles.validate(bundle, package=PAS201)
    hits = [i for i in profiles.errors(outcome) if i["details"]["coding"][0]["code"] == "unknown-element"]
    assert hits and hits[0]["expression"] == ["Bundle.entry[0].resource.colour"]


def test_a_value_other_than_the_fixed_one_fails_fixed():
    bundle = _example(PAS201, "Bundle-ReferralAuthorizationResponseBundleExample.json")
    bundle["type"] = "batch"
    assert "fixed" in _keys(bundle)


def test_a_value_outside_the_pattern_fails_pattern():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["use"] = "claim"
    assert "pattern" in _keys(bundle)


def test_a_code_outside_a_required_value_set_fails_binding():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["status"] = "sleeping"
    assert "binding" in _keys(bundle)


def test_a_coding_outside_an_extensible_value_set_is_a_warning():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["type"] = {"coding": [{"system": "http://example.org/types", "code": "x"}]}
    outcome = profiles.validate(bundle, package=PAS201)
    assert "binding" not in profiles.issue_keys(outcome)
    warnings = [i for i in outcome["issue"] if i["severity"] == "warning" and i["details"]["coding"][0]["code"] == "binding"]
    assert warnings[0]["expression"] == ["Bundle.entry[0].resource.type"]


def test_a_request_bundle_without_its_claim_fails_slice_cardinality():
    bundle = _claim_bundle()
    bundle["entry"] = bundle["entry"][1:]
    assert "slice-cardinality" in _keys(bundle)


def test_an_extension_outside_its_contexts_fails_extension_context():
    bundle = _claim_bundle()
    claim = bundle["entry"][0]["resource"]
    claim["extension"].append({"url": "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-itemTraceNumber",
                               "valueIdentifier": {"system": "http://example.org", "value": "1"}})
    assert "extension-context" in _keys(bundle)


def test_an_unknown_extension_is_a_warning_not_an_error():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["extension"].append({"url": "http://example.org/ext", "valueString": "x"})
    outcome = profiles.validate(bundle, package=PAS201)
    assert profiles.errors(outcome) == []
    assert any(i["details"]["coding"][0]["code"] == "extension-unknown" for i in outcome["issue"])


def test_a_reference_to_an_entry_of_the_wrong_kind_fails_reference_target():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["insurance"][0]["coverage"] = {"reference": "Patient/SubscriberExample"}
    assert "reference-target" in _keys(bundle)


def test_duplicate_full_urls_fail_the_bundle_invariant():
    bundle = _claim_bundle()
    bundle["entry"][2]["fullUrl"] = bundle["entry"][1]["fullUrl"]
    outcome = profiles.validate(bundle, package=PAS201)
    bdl7 = [i for i in profiles.errors(outcome) if i["details"]["coding"][0]["code"] == "bdl-7"]
    assert bdl7 and bdl7[0]["expression"] == ["Bundle"]


def test_an_invariant_on_a_nested_element_fails_with_its_key_and_location():
    claim = _example(PAS201, "Claim-ReferralAuthorizationExample.json")
    claim["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] = "U"
    claim["extension"][0]["valueString"] = "both"
    keys = _keys(claim)
    assert "ext-1" in keys or "type" in keys


def test_a_closed_slicing_rejects_an_item_matching_no_slice():
    profiles.registry().add({
        "resourceType": "StructureDefinition", "url": "http://example.org/StructureDefinition/closed-patient",
        "type": "Patient", "snapshot": {"element": [
            {"id": "Patient", "path": "Patient", "min": 0, "max": "*"},
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 0, "max": "*",
             "type": [{"code": "Identifier"}], "base": {"path": "Patient.identifier", "min": 0, "max": "*"},
             "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "closed"}},
            {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn", "min": 1, "max": "1",
             "type": [{"code": "Identifier"}], "base": {"path": "Patient.identifier", "min": 0, "max": "*"}},
            {"id": "Patient.identifier:mrn.system", "path": "Patient.identifier.system", "min": 1, "max": "1",
             "type": [{"code": "uri"}], "fixedUri": "http://example.org/mrn",
             "base": {"path": "Identifier.system", "min": 0, "max": "1"}},
            {"id": "Patient.identifier:mrn.value", "path": "Patient.identifier.value", "min": 0, "max": "1",
             "type": [{"code": "string"}], "base": {"path": "Identifier.value", "min": 0, "max": "1"}},
        ]}})
    url = "http://example.org/StructureDefinition/closed-patient"
    good = {"resourceType": "Patient", "identifier": [{"system": "http://example.org/mrn", "value": "1"}]}
    assert profiles.errors(profiles.validate(good, profile=url)) == []
    bad = {"resourceType": "Patient", "identifier": [{"system": "http://example.org/mrn", "value": "1"},
                                                     {"system": "http://example.org/other", "value": "2"}]}
    assert "slice-closed" in _keys(bad, package=None, profile=url)
    missing = {"resourceType": "Patient", "identifier": []}
    assert "slice-cardinality" in _keys({"resourceType": "Patient"}, package=None, profile=url) | _keys(missing, None, url)


def test_an_unknown_profile_is_refused():
    with pytest.raises(profiles.UnknownProfile):
        profiles.validate({"resourceType": "Patient"}, profile="http://example.org/nothing")


def test_each_issue_names_its_location_severity_and_key():
    bundle = _claim_bundle()
    bundle["entry"][0]["resource"]["status"] = "sleeping"
    found = profiles.validate(bundle, package=PAS201)["issue"]
    # Not a code of the value set, and not the 'active' the PAS profile requires: one issue each.
    assert {(i["severity"], i["expression"][0], i["details"]["coding"][0]["system"], i["details"]["coding"][0]["code"]) for i in found} == {
        ("error", "Bundle.entry[0].resource.status", profiles.KEY_SYSTEM, "binding"),
        ("error", "Bundle.entry[0].resource.status", profiles.KEY_SYSTEM, "pattern")}


def test_the_pas_2_2_1_request_bundle_is_checked_against_its_own_version():
    bundle = _claim_bundle(PAS221)
    assert profiles.errors(profiles.validate(bundle, package=PAS221)) == []
    del bundle["entry"][0]["resource"]["patient"]
    assert "cardinality" in _keys(bundle, package=PAS221)


def _entry_index(bundle: dict, rtype: str) -> int:
    return next(i for i, e in enumerate(bundle["entry"]) if e["resource"]["resourceType"] == rtype)


def _located(outcome: dict) -> set[tuple[str, str]]:
    return {(i["expression"][0], i["details"]["coding"][0]["code"]) for i in profiles.errors(outcome)}


def test_a_resource_seen_before_is_reported_where_it_now_is():
    # The same faulty Patient in two requests, at another entry the second time: the second answer
    # names the second place (the first walk's result is reused for the same JSON).
    first = _claim_bundle(PAS221)
    p = _entry_index(first, "Patient")
    del first["entry"][p]["resource"]["name"]
    assert (f"Bundle.entry[{p}].resource.name", "cardinality") in _located(profiles.validate(first, package=PAS221))
    second = copy.deepcopy(first)
    second["entry"].append(second["entry"].pop(p))
    last = len(second["entry"]) - 1
    found = _located(profiles.validate(second, package=PAS221))
    assert (f"Bundle.entry[{last}].resource.name", "cardinality") in found
    assert (f"Bundle.entry[{p}].resource.name", "cardinality") not in found


def test_a_resource_seen_before_is_checked_again_against_what_it_refers_to_now():
    # The Coverage's JSON is the same in both requests; the Patient it refers to is not, so whether
    # its reference meets the target profile is decided again for each request.
    good = _claim_bundle(PAS221)
    c = _entry_index(good, "Coverage")
    assert not any(code == "reference-target" for _, code in _located(profiles.validate(good, package=PAS221)))
    bad = copy.deepcopy(good)
    del bad["entry"][_entry_index(bad, "Patient")]["resource"]["name"]
    assert (f"Bundle.entry[{c}].resource.beneficiary.reference", "reference-target") in _located(profiles.validate(bad, package=PAS221))
    # ... and back: a conformant Patient again clears it.
    assert not any(code == "reference-target" for _, code in _located(profiles.validate(good, package=PAS221)))
