"""``precert clients``, ``precert staff`` and ``precert signing-key``."""

from __future__ import annotations

import json

from server.auth.testing import ClientKey
from server.cli import main


def test_signing_key_prints_an_ec_p256_pem(capsys):
    from cryptography.hazmat.primitives import serialization

    assert main(["signing-key"]) == 0
    key = serialization.load_pem_private_key(capsys.readouterr().out.encode(), password=None)
    assert key.curve.name == "secp256r1"


def test_clients_add_list_show_disable_remove(db, tmp_path, capsys):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(ClientKey.generate("RS384").jwks))
    assert main(["clients", "add", *db, "--name", "Clinic EHR", "--client-id", "clinic-ehr", "--npi", "1234567893",
                 "--jwks-file", str(jwks), "--scope", "system/Claim.c system/ClaimResponse.rs"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["organization"]["value"] == "1234567893" and shown["scopes"] == "system/Claim.c system/ClaimResponse.rs"
    assert main(["clients", "add", *db, "--name", "Inferno", "--client-id", "inferno",
                 "--organization", "urn:oid:2.16.840.1.113883.4.4|12-3456789",
                 "--jwks-url", "https://inferno.example.org/jwks.json"]) == 0
    capsys.readouterr()
    assert main(["clients", "list", *db]) == 0
    listing = capsys.readouterr().out
    assert "clinic-ehr\tactive" in listing and "inferno\tactive" in listing
    assert main(["clients", "disable", *db, "clinic-ehr"]) == 0
    assert main(["clients", "show", *db, "clinic-ehr"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["active"] is False
    assert main(["clients", "remove", *db, "clinic-ehr"]) == 0
    assert main(["clients", "show", *db, "clinic-ehr"]) == 1


def test_clients_add_refuses_bad_registrations(db, capsys):
    assert main(["clients", "add", *db, "--name", "x", "--npi", "123", "--jwks-url", "https://a.example/j"]) == 2
    assert "NPI" in capsys.readouterr().err
    assert main(["clients", "add", *db, "--name", "x", "--npi", "1234567893"]) == 2
    assert main(["clients", "remove", *db, "never-there"]) == 1


def test_staff_add_roles_disable(db, tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert main(["staff", "add", *db, "alice", "--role", "reviewer", "--password-file", str(pw)]) == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["reviewer"]
    assert main(["staff", "roles", *db, "alice", "--role", "reviewer", "--role", "medical-director"]) == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["reviewer", "medical-director"]
    assert main(["staff", "disable", *db, "alice"]) == 0
    assert json.loads(capsys.readouterr().out)["active"] is False
    assert main(["staff", "list", *db]) == 0
    assert "alice\tdisabled\treviewer,medical-director" in capsys.readouterr().out
    short = tmp_path / "short"
    short.write_text("short")
    assert main(["staff", "add", *db, "bob", "--role", "reviewer", "--password-file", str(short)]) == 2
    assert main(["staff", "remove", *db, "nobody"]) == 1
