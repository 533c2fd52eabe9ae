"""Each staff account carries its licence type, set from the command line and the admin API, and an
unknown licence is refused rather than stored."""

from __future__ import annotations

import json
import uuid

from server.cli import main
from tests.test_review_support import staff_headers


def test_staff_add_and_update_set_the_licence_from_the_command_line(db, tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert main(["staff", "add", *db, "drlee", "--role", "medical-director", "--licence", "MD", "--password-file", str(pw)]) == 0
    assert json.loads(capsys.readouterr().out)["licence"] == "MD"
    assert main(["staff", "add", *db, "nina", "--role", "reviewer", "--licence", "RN", "--password-file", str(pw)]) == 0
    capsys.readouterr()
    assert main(["staff", "update", *db, "nina", "--licence", "PharmD"]) == 0
    assert json.loads(capsys.readouterr().out)["licence"] == "PharmD"
    assert main(["staff", "update", *db, "nina", "--licence", "NP", "--role", "reviewer"]) == 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["licence"] == "NP" and changed["roles"] == ["reviewer"]
    assert main(["staff", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert "drlee\tactive\tmedical-director\tMD" in listing and "nina\tactive\treviewer\tNP" in listing


def test_the_command_line_refuses_an_unknown_licence(db, tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert main(["staff", "add", *db, "quack", "--role", "medical-director", "--licence", "Witchdoctor", "--password-file", str(pw)]) == 2
    assert "licence: one of MD, DO" in capsys.readouterr().err
    assert main(["staff", "list", *db]) == 0
    assert "quack" not in capsys.readouterr().out
    assert main(["staff", "add", *db, "ok", "--role", "reviewer", "--licence", "RN", "--password-file", str(pw)]) == 0
    capsys.readouterr()
    assert main(["staff", "update", *db, "ok", "--licence", "md"]) == 2
    assert main(["staff", "update", *db, "ok"]) == 2
    assert main(["staff", "update", *db, "nobody", "--licence", "RN"]) == 1


def _problem(r) -> dict:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 400 and "licence" in body["detail"]
    return body


def test_the_admin_api_sets_and_changes_a_licence_and_refuses_unknown_ones(client):
    admin = staff_headers(client, "admin")
    name = f"nurse-{uuid.uuid4().hex[:6]}"
    r = client.post("/admin/auth/staff", headers=admin, json={"username": name, "password": "a long enough password",
                                                              "roles": ["reviewer"], "licence": "RN"})
    assert r.status_code == 201 and r.json()["licence"] == "RN"
    r = client.patch(f"/admin/auth/staff/{name}", headers=admin, json={"licence": "PharmD"})
    assert r.status_code == 200 and r.json()["licence"] == "PharmD"
    _problem(client.patch(f"/admin/auth/staff/{name}", headers=admin, json={"licence": "Shaman"}))
    _problem(client.patch(f"/admin/auth/staff/{name}", headers=admin, json={"licence": ["MD"]}))
    _problem(client.post("/admin/auth/staff", headers=admin, json={"username": name + "x", "password": "a long enough password",
                                                                  "roles": ["medical-director"], "licence": "Dr"}))
    listed = {u["username"]: u for u in client.get("/admin/auth/staff", headers=admin).json()["staff"]}
    assert listed[name]["licence"] == "PharmD" and name + "x" not in listed
    # The licence decides what the account may sign: promoted to MD with the director role, it may deny.
    r = client.patch(f"/admin/auth/staff/{name}", headers=admin, json={"licence": "MD", "roles": ["medical-director"]})
    assert r.status_code == 200 and r.json()["licence"] == "MD" and r.json()["roles"] == ["medical-director"]
