"""Search: parameters of each kind, paging, sorting, totals and _include."""

from __future__ import annotations

FHIR = {"Content-Type": "application/fhir+json"}


def ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def test_sandbox_member_found_by_member_id(client):
    b = client.get("/fhir/Patient", params={"identifier": "http://precert.example.org/sid/member-id|PCM000003"}).json()
    assert b["type"] == "searchset" and b["total"] == 1
    assert ids(b) == ["pat-003"]
    assert b["entry"][0]["fullUrl"].endswith("/fhir/Patient/pat-003")


def test_token_without_system_matches_any_system(client):
    assert ids(client.get("/fhir/Patient", params={"identifier": "PCM000004"}).json()) == ["pat-004"]


def test_token_with_wrong_system_matches_nothing(client):
    assert client.get("/fhir/Patient", params={"identifier": "urn:other|PCM000004"}).json()["total"] == 0


def test_comma_means_or(client):
    b = client.get("/fhir/Patient", params={"identifier": "PCM000001,PCM000002"}).json()
    assert sorted(ids(b)) == ["pat-001", "pat-002"]


def test_reference_search_by_id_and_by_type_and_id(client):
    assert ids(client.get("/fhir/Coverage", params={"beneficiary": "pat-005"}).json()) == ["cov-005"]
    assert ids(client.get("/fhir/Coverage", params={"patient": "Patient/pat-005"}).json()) == ["cov-005"]


def test_status_token(client):
    b = client.get("/fhir/Coverage", params={"status": "cancelled", "patient": "pat-010"}).json()
    assert ids(b) == ["cov-010"]
    assert client.get("/fhir/Coverage", params={"status": "active", "patient": "pat-010"}).json()["total"] == 0


def test_not_modifier(client):
    b = client.get("/fhir/Coverage", params={"status:not": "active", "_count": "100"}).json()
    assert "cov-010" in ids(b) and "cov-001" not in ids(b)


def test_string_search_is_case_insensitive_prefix(client):
    assert ids(client.get("/fhir/Patient", params={"family": "rive"}).json()) == ["pat-001"]
    assert client.get("/fhir/Patient", params={"family:exact": "rive"}).json()["total"] == 0


def test_date_search_prefixes(client):
    older = ids(client.get("/fhir/Patient", params={"birthdate": "lt1945-01-01", "_count": "100"}).json())
    assert "pat-007" in older and "pat-001" not in older
    exact = ids(client.get("/fhir/Patient", params={"birthdate": "1985-06-21"}).json())
    assert exact == ["pat-003"]
    year = ids(client.get("/fhir/Patient", params={"birthdate": "1985"}).json())
    assert year == ["pat-003"]


def test_last_updated_search(client, unique):
    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": "urn:test:lu", "value": unique}]}, headers=FHIR).json()
    stamp = created["meta"]["lastUpdated"]
    b = client.get("/fhir/Patient", params={"_lastUpdated": f"ge{stamp}", "identifier": f"urn:test:lu|{unique}"}).json()
    assert ids(b) == [created["id"]]
    b = client.get("/fhir/Patient", params={"_lastUpdated": "lt2000-01-01", "identifier": f"urn:test:lu|{unique}"}).json()
    assert b["total"] == 0


def test_id_search(client):
    assert ids(client.get("/fhir/Patient", params={"_id": "pat-002,pat-003"}).json()) in (["pat-002", "pat-003"], ["pat-003", "pat-002"])


def test_canonical_url_and_version(client, unique):
    url = f"http://example.org/Questionnaire/q-{unique}"
    for version in ("1.0.0", "2.0.0"):
        q = {"resourceType": "Questionnaire", "url": url, "version": version, "status": "active"}
        assert client.post("/fhir/Questionnaire", json=q, headers=FHIR).status_code == 201
    assert client.get("/fhir/Questionnaire", params={"url": url}).json()["total"] == 2
    b = client.get("/fhir/Questionnaire", params={"url": url, "version": "2.0.0"}).json()
    assert b["total"] == 1 and b["entry"][0]["resource"]["version"] == "2.0.0"


def test_paging_links_walk_every_result_once(client):
    first = client.get("/fhir/Patient", params={"identifier": "http://precert.example.org/sid/member-id|", "_count": "5", "_sort": "_id"}).json()
    assert first["total"] == 12
    seen = ids(first)
    page = first
    while True:
        nxt = [l["url"] for l in page["link"] if l["relation"] == "next"]
        if not nxt:
            break
        page = client.get(nxt[0]).json()
        seen += ids(page)
    assert len(seen) == 12 and len(set(seen)) == 12
    assert seen == sorted(seen)


def test_sort_descending(client):
    b = client.get("/fhir/Patient", params={"identifier": "http://precert.example.org/sid/member-id|", "_sort": "-birthdate", "_count": "3"}).json()
    assert ids(b)[0] == "pat-006"  # born 2012, the youngest


def test_count_zero_gives_total_only(client):
    b = client.get("/fhir/Coverage", params={"payor": "Organization/precert-demo-payer", "_summary": "count"}).json()
    assert b["total"] >= 12 and "entry" not in b


def test_include_brings_referenced_resources(client):
    b = client.get("/fhir/Coverage", params={"_id": "cov-002", "_include": "Coverage:patient"}).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in b["entry"]}
    assert modes == {("Coverage", "match"), ("Patient", "include")}
    assert b["total"] == 1


def test_revinclude(client):
    b = client.get("/fhir/Patient", params={"_id": "pat-002", "_revinclude": "Coverage:patient"}).json()
    included = [e["resource"]["id"] for e in b["entry"] if e["search"]["mode"] == "include"]
    assert included == ["cov-002"]


def test_post_search_with_form_body(client):
    r = client.post("/fhir/Patient/_search", data={"identifier": "PCM000007"})
    assert r.status_code == 200 and ids(r.json()) == ["pat-007"]


def test_include_of_unknown_parameter_is_refused(client):
    r = client.get("/fhir/Coverage", params={"_include": "Coverage:nonsense"})
    assert r.status_code == 400
