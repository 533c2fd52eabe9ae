"""Small constructors for the ELM (Expression Logical Model, urn:hl7-org:elm r1) node shapes the
Precert CQL libraries use.

No CQL-to-ELM translator exists for Python or npm, so each library's ELM is written by hand in
``questionnaires/tools/libraries.py`` with these constructors, one statement per CQL ``define``, and
written next to the CQL as ``library.elm.json``. The constructors only remove JSON noise; every
expression tree is chosen to mirror its CQL line by line. The test suite checks that CQL and ELM
declare the same libraries, includes, value sets and defines.
"""

from __future__ import annotations

FHIR = "{http://hl7.org/fhir}"


def library(name: str, version: str, *, includes=(), valuesets=(), statements=()) -> dict:
    lib: dict = {
        "identifier": {"id": name, "version": version},
        "schemaIdentifier": {"id": "urn:hl7-org:elm", "version": "r1"},
        "usings": {"def": [
            {"localIdentifier": "System", "uri": "urn:hl7-org:elm-types:r1"},
            {"localIdentifier": "FHIR", "uri": "http://hl7.org/fhir", "version": "4.0.1"},
        ]},
    }
    if includes:
        lib["includes"] = {"def": [{"localIdentifier": alias, "path": path, "version": ver} for alias, path, ver in includes]}
    if valuesets:
        lib["valueSets"] = {"def": [{"name": n, "id": url, "version": ver, "accessLevel": "Public"} for n, url, ver in valuesets]}
    lib["contexts"] = {"def": [{"name": "Patient"}]}
    patient = define("Patient", {"type": "SingletonFrom", "operand": retrieve("Patient")})
    lib["statements"] = {"def": [patient, *statements]}
    return {"library": lib}


def define(name: str, expression: dict) -> dict:
    return {"name": name, "context": "Patient", "accessLevel": "Public", "expression": expression}


def retrieve(rtype: str, valueset: str | None = None) -> dict:
    node: dict = {"dataType": f"{FHIR}{rtype}", "templateId": f"http://hl7.org/fhir/StructureDefinition/{rtype}", "type": "Retrieve"}
    if valueset:
        node["codeProperty"] = "code"
        node["codeComparator"] = "in"
        node["codes"] = {"name": valueset, "preserve": True, "type": "ValueSetRef"}
    return node


def ref(name: str, library: str | None = None) -> dict:
    node = {"name": name, "type": "ExpressionRef"}
    if library:
        node["libraryName"] = library
    return node


def prop(path: str, source: dict | None = None, scope: str | None = None) -> dict:
    """A property path; dotted paths become nested Property nodes (``a.b`` = Property(b, Property(a)))."""
    parts = path.split(".")
    node: dict = {"path": parts[0], "type": "Property"}
    if source is not None:
        node["source"] = source
    if scope is not None:
        node["scope"] = scope
    for part in parts[1:]:
        node = {"path": part, "source": node, "type": "Property"}
    return node


def alias(name: str) -> dict:
    return {"name": name, "type": "AliasRef"}


def first(source: dict) -> dict:
    return {"type": "First", "source": source}


def last(source: dict) -> dict:
    return {"type": "Last", "source": source}


def exists(operand: dict) -> dict:
    return {"type": "Exists", "operand": operand}


def as_type(fhir_type: str, operand: dict) -> dict:
    return {"asType": f"{FHIR}{fhir_type}", "type": "As", "operand": operand, "strict": False}


def literal_string(value: str) -> dict:
    return {"valueType": "{urn:hl7-org:elm-types:r1}String", "value": value, "type": "Literal"}


def string_list(values) -> dict:
    return {"type": "List", "element": [literal_string(v) for v in values]}


def query(source_alias: str, source: dict, *, where: dict | None = None, ret: dict | None = None, sort_by: dict | None = None) -> dict:
    node: dict = {"type": "Query", "source": [{"alias": source_alias, "expression": source}], "relationship": []}
    if where is not None:
        node["where"] = where
    if ret is not None:
        node["return"] = {"distinct": False, "expression": ret}
    if sort_by is not None:
        node["sort"] = {"by": [{"direction": "asc", "type": "ByExpression", "expression": sort_by}]}
    return node


def status_in(alias_name: str, statuses) -> dict:
    """``A.status.value in { ... }``"""
    return {"type": "In", "operand": [prop("status.value", scope=alias_name), string_list(statuses)]}


def date_from(operand: dict) -> dict:
    return {"type": "DateFrom", "operand": operand}


def truncate(operand: dict) -> dict:
    return {"type": "Truncate", "operand": operand}


def today() -> dict:
    return {"type": "Today"}


def age_in_years_at(birth_date: dict, as_of: dict) -> dict:
    return {"precision": "Year", "type": "CalculateAgeAt", "operand": [birth_date, as_of]}


# ---- the few statement shapes every template library repeats -------------------------------------
FINAL = ("final", "amended", "corrected")


def results(valueset: str) -> dict:
    """``[Observation: "VS"] O where O.status.value in { 'final', 'amended', 'corrected' }``"""
    return query("O", retrieve("Observation", valueset), where=status_in("O", FINAL))


def latest(results_define: str) -> dict:
    """``Last("Results" O sort by issued.value)``"""
    return last(query("O", ref(results_define), sort_by=prop("issued.value")))


def quantity_value(latest_define: str) -> dict:
    """``("Latest".value as FHIR.Quantity).value.value``"""
    return prop("value.value", as_type("Quantity", prop("value", ref(latest_define))))


def issued_date(latest_define: str) -> dict:
    """``date from "Latest".issued.value``"""
    return date_from(prop("issued.value", ref(latest_define)))


def first_codings(conditions_define: str) -> dict:
    """``"Conditions" C return First(C.code.coding)``"""
    return query("C", ref(conditions_define), ret=first(prop("code.coding", scope="C")))
