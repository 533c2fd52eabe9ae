"""Clinical charts of the sandbox members: the Conditions, Observations, Procedures and
MedicationRequests a DTR client's CQL reads to pre-fill the Precert forms.

Results are listed out of date order on purpose (an EHR sends them in whatever order it likes), and a
few are preliminary or entered in error, so a library that takes "the first" or "the last" without
sorting and filtering gives a visibly wrong answer. The expected answers per member and form are in
``tests/test_cql_execution.py``.
"""

from __future__ import annotations

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

# (member, ICD-10-CM code, display, recordedDate)
CONDITIONS = [
    ("pat-001", "R09.02", "Hypoxemia", "2026-11-20"),
    ("pat-001", "J44.9", "Chronic obstructive pulmonary disease, unspecified", "2024-03-02"),
    ("pat-002", "E11.9", "Type 2 diabetes mellitus without complications", "2019-05-14"),
    ("pat-002", "G83.4", "Cauda equina syndrome", "2026-11-02"),
    ("pat-003", "F33.2", "Major depressive disorder, recurrent severe without psychotic features", "2025-02-10"),
    ("pat-003", "F41.1", "Generalized anxiety disorder", "2026-09-30"),
    ("pat-003", "F10.20", "Alcohol dependence, uncomplicated", "2023-07-01"),
    ("pat-004", "Z89.611", "Acquired absence of right leg above knee", "2025-04-02"),
    ("pat-004", "Z89.612", "Acquired absence of left leg above knee", "2024-09-15"),
    ("pat-005", "M06.9", "Rheumatoid arthritis, unspecified", "2022-01-18"),
    ("pat-005", "L40.0", "Psoriasis vulgaris", "2026-06-03"),
    ("pat-007", "G35", "Multiple sclerosis", "2018-10-09"),
    ("pat-007", "R26.2", "Difficulty in walking, not elsewhere classified", "2026-08-21"),
    ("pat-008", "J96.11", "Chronic respiratory failure with hypoxia", "2026-07-07"),
]

# (member, LOINC code, display, value, UCUM unit, issued, status)
OBSERVATIONS = [
    ("pat-001", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 87, "%", "2026-10-01T09:30:00Z", "final"),
    ("pat-001", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 86, "%", "2026-11-20T10:15:00Z", "final"),
    ("pat-001", "2708-6", "Oxygen saturation in Arterial blood", 93, "%", "2026-06-15T08:00:00Z", "final"),
    ("pat-001", "2703-7", "Oxygen [Partial pressure] in Arterial blood", 54, "mm[Hg]", "2026-11-20T10:20:00Z", "final"),
    ("pat-001", "2703-7", "Oxygen [Partial pressure] in Arterial blood", 61, "mm[Hg]", "2026-09-01T11:00:00Z", "final"),
    ("pat-002", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted (MDRD)", 58, "mL/min/{1.73_m2}", "2026-08-01T07:45:00Z", "final"),
    ("pat-002", "62238-1", "Glomerular filtration rate/1.73 sq M.predicted (CKD-EPI)", 42, "mL/min/{1.73_m2}", "2026-11-05T07:40:00Z", "final"),
    ("pat-002", "33914-3", "Glomerular filtration rate/1.73 sq M.predicted (MDRD)", 70, "mL/min/{1.73_m2}", "2026-03-01T08:10:00Z", "final"),
    ("pat-002", "39156-5", "Body mass index (BMI) [Ratio]", 41.2, "kg/m2", "2026-02-11T09:00:00Z", "final"),
    ("pat-002", "39156-5", "Body mass index (BMI) [Ratio]", 38.5, "kg/m2", "2026-11-05T09:00:00Z", "final"),
    ("pat-002", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 7.9, "%", "2026-10-12T08:00:00Z", "final"),
    ("pat-002", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", 8.4, "%", "2026-05-20T08:00:00Z", "final"),
    ("pat-003", "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score", 18, "{score}", "2026-11-10T14:00:00Z", "final"),
    ("pat-003", "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score", 22, "{score}", "2026-07-01T14:00:00Z", "final"),
    ("pat-003", "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score", 20, "{score}", "2026-09-02T14:00:00Z", "final"),
    ("pat-003", "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score", 9, "{score}", "2026-11-25T14:00:00Z", "entered-in-error"),
    ("pat-005", "29463-7", "Body weight", 68.4, "kg", "2026-11-02T10:00:00Z", "final"),
    ("pat-005", "29463-7", "Body weight", 71.0, "kg", "2026-01-15T10:00:00Z", "final"),
    ("pat-008", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 95, "%", "2026-11-28T16:00:00Z", "preliminary"),
    ("pat-008", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 88, "%", "2026-09-14T16:00:00Z", "final"),
    ("pat-008", "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", 90, "%", "2026-04-03T16:00:00Z", "final"),
]

# (member, code system, code, display, performed date)
PROCEDURES = [
    ("pat-004", SNOMED, "79733001", "Amputation above knee", "2024-09-10"),
    ("pat-004", SNOMED, "79733001", "Amputation above knee", "2025-03-28"),
    ("pat-002", CPT, "72148", "MRI lumbar spine without contrast", "2025-01-20"),
]

# (member, RxNorm code, display, authoredOn)
MEDICATION_REQUESTS = [
    ("pat-005", "105586", "methotrexate 2.5 MG Oral Tablet", "2022-02-01"),
    ("pat-001", "896209", "tiotropium 18 MCG Inhalation Powder", "2024-03-02"),
]


def _subject(member: str) -> dict:
    return {"reference": f"Patient/{member}"}


def chart_resources() -> list[dict]:
    """Every chart resource, with stable ids (``<member>-<kind>-<n>``)."""
    out: list[dict] = []
    count: dict[tuple[str, str], int] = {}

    def rid(member: str, kind: str) -> str:
        n = count[(member, kind)] = count.get((member, kind), 0) + 1
        return f"{member}-{kind}-{n}"

    for member, code, display, recorded in CONDITIONS:
        out.append({
            "resourceType": "Condition",
            "id": rid(member, "cond"),
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": ICD10, "code": code, "display": display}], "text": display},
            "subject": _subject(member),
            "recordedDate": recorded,
        })
    for member, code, display, value, unit, issued, status in OBSERVATIONS:
        out.append({
            "resourceType": "Observation",
            "id": rid(member, "obs"),
            "status": status,
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": _subject(member),
            "effectiveDateTime": issued,
            "issued": issued,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        })
    for member, system, code, display, performed in PROCEDURES:
        out.append({
            "resourceType": "Procedure",
            "id": rid(member, "proc"),
            "status": "completed",
            "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
            "subject": _subject(member),
            "performedDateTime": performed,
        })
    for member, code, display, authored in MEDICATION_REQUESTS:
        out.append({
            "resourceType": "MedicationRequest",
            "id": rid(member, "medreq"),
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": display}], "text": display},
            "subject": _subject(member),
            "authoredOn": authored,
        })
    return out


def member_chart(member: str) -> list[dict]:
    """The chart resources of one member."""
    ref = f"Patient/{member}"
    return [r for r in chart_resources() if r["subject"]["reference"] == ref]
