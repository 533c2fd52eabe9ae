"""SMART scopes: v1 and v2 syntax reduce to the same permissions; scope mediation."""

from __future__ import annotations

import pytest

from server.auth.scopes import Permissions, mediate, parse_scope, register_types
from server.fhir.resources import PROVIDERS

register_types(PROVIDERS)


@pytest.mark.parametrize("v1,v2", [
    ("system/Claim.write", "system/Claim.cud"),
    ("system/Claim.read", "system/Claim.rs"),
    ("system/Claim.*", "system/Claim.cruds"),
    ("system/*.read", "system/*.rs"),
])
def test_v1_scopes_mean_the_same_as_v2(v1, v2):
    assert parse_scope(v1).letters == parse_scope(v2).letters
    assert parse_scope(v1).v1 and not parse_scope(v2).v1


@pytest.mark.parametrize("text", ["system/Claim.dus", "system/Claim.rr", "system/Claim.x", "system/Claim", "Claim.read",
                                  "system/Cl aim.read", "launch", "openid", "", "system/Claim.read.write"])
def test_malformed_scopes_are_not_parsed(text):
    assert parse_scope(text) is None


def test_resource_names_are_matched_case_insensitively():
    assert parse_scope("system/questionnaire.rs").resource_type == "Questionnaire"


def test_only_system_scopes_without_restrictions_grant_anything():
    perms = Permissions.from_scopes("patient/Claim.read user/Claim.read system/Claim.rs?status=active system/Task.r")
    assert not perms.allows("Claim", "r")
    assert perms.allows("Task", "r") and not perms.allows("Task", "s")


def test_wildcard_grants_every_type():
    perms = Permissions.from_scopes("system/*.rs system/Claim.c")
    assert perms.allows("Patient", "r") and perms.allows("Claim", "c") and not perms.allows("Patient", "c")


def test_mediation_keeps_what_is_allowed_in_the_requested_spelling():
    allowed = Permissions.from_scopes("system/Claim.cr system/*.rs")
    assert mediate("system/Claim.write system/Patient.read", allowed) == ["system/Claim.c", "system/Patient.read"]
    assert mediate("system/*.cruds", Permissions.from_scopes("system/Claim.c system/Task.rs")) == ["system/Claim.c", "system/Task.rs"]
    assert mediate("system/*.read", Permissions.from_scopes("system/*.cruds")) == ["system/*.read"]
    assert mediate("system/Patient.rs", Permissions.from_scopes("system/Claim.c")) == []
