"""The ELM of every Precert CQL library, written statement by statement to mirror its ``library.cql``.

Run ``python -m questionnaires.tools.libraries`` after editing a library: it rewrites each folder's
``library.elm.json``. Keep each ``define`` here in the same order and shape as in the CQL.
"""

from __future__ import annotations

import json
from pathlib import Path

from questionnaires.tools.elm import (
    age_in_years_at, date_from, define, exists, first, first_codings, issued_date, latest,
    library, prop, quantity_value, query, ref, results, retrieve, today, truncate,
)

ROOT = Path(__file__).resolve().parents[1]
VS = "http://precert.example.org/fhir/ValueSet/"
V = "1.0.0"
COMMON = ("Common", "PrecertCommon", V)


def vs(name: str, slug: str) -> tuple[str, str, str]:
    return (name, VS + slug, V)


LIBRARIES: dict[str, dict] = {
    "common": library("PrecertCommon", V, statements=[
        define("FamilyName", prop("family.value", first(prop("name", ref("Patient"))))),
        define("GivenName", prop("value", first(prop("given", first(prop("name", ref("Patient"))))))),
        define("BirthDate", prop("birthDate.value", ref("Patient"))),
        define("AgeInYears", age_in_years_at(prop("birthDate.value", ref("Patient")), today())),
        define("Gender", prop("gender.value", ref("Patient"))),
    ]),
    "dme-home-oxygen": library("HomeOxygen", V, includes=[COMMON], valuesets=[
        vs("OxygenQualifyingConditions", "home-oxygen-qualifying-conditions"),
        vs("OxygenSaturationTests", "oxygen-saturation-tests"),
        vs("ArterialOxygenTests", "arterial-po2-tests"),
    ], statements=[
        define("QualifyingConditions", retrieve("Condition", "OxygenQualifyingConditions")),
        define("QualifyingConditionCodings", first_codings("QualifyingConditions")),
        define("SaturationResults", results("OxygenSaturationTests")),
        define("LatestSaturation", latest("SaturationResults")),
        define("LatestSpO2Percent", quantity_value("LatestSaturation")),
        define("LatestSaturationDate", issued_date("LatestSaturation")),
        define("ArterialResults", results("ArterialOxygenTests")),
        define("LatestArterial", latest("ArterialResults")),
        define("LatestPaO2", quantity_value("LatestArterial")),
    ]),
    "advanced-imaging": library("AdvancedImaging", V, includes=[COMMON], valuesets=[
        vs("ImagingRedFlagConditions", "imaging-red-flag-conditions"),
        vs("RenalFunctionTests", "renal-function-tests"),
    ], statements=[
        define("RedFlagConditions", retrieve("Condition", "ImagingRedFlagConditions")),
        define("HasRedFlagCondition", exists(ref("RedFlagConditions"))),
        define("EGFRResults", results("RenalFunctionTests")),
        define("LatestEGFRResult", latest("EGFRResults")),
        define("LatestEGFR", quantity_value("LatestEGFRResult")),
    ]),
    "specialty-drugs": library("SpecialtyDrugs", V, includes=[COMMON], valuesets=[
        vs("BiologicIndications", "specialty-drug-indications"),
        vs("BodyWeightTests", "body-weight-tests"),
    ], statements=[
        define("IndicationConditions", retrieve("Condition", "BiologicIndications")),
        define("IndicationCodings", first_codings("IndicationConditions")),
        define("WeightResults", results("BodyWeightTests")),
        define("LatestWeight", latest("WeightResults")),
        define("LatestWeightKg", quantity_value("LatestWeight")),
    ]),
    "dme-wheelchair": library("Wheelchair", V, includes=[COMMON], valuesets=[
        vs("MobilityLimitingConditions", "mobility-limiting-conditions"),
    ], statements=[
        define("MobilityConditions", retrieve("Condition", "MobilityLimitingConditions")),
        define("MobilityConditionCodings", first_codings("MobilityConditions")),
        define("HasMobilityCondition", exists(ref("MobilityConditions"))),
    ]),
    "dme-prosthetic": library("LowerLimbProsthesis", V, includes=[COMMON], valuesets=[
        vs("LimbAbsenceConditions", "lower-limb-absence-conditions"),
    ], statements=[
        define("AmputationConditions", retrieve("Condition", "LimbAbsenceConditions")),
        define("AmputationConditionCodings", first_codings("AmputationConditions")),
        define("EarliestAmputation", first(query("C", ref("AmputationConditions"), sort_by=prop("recordedDate.value")))),
        define("AmputationRecordedDate", date_from(prop("recordedDate.value", ref("EarliestAmputation")))),
    ]),
    "behavioral-iop": library("BehavioralIOP", V, includes=[COMMON], valuesets=[
        vs("BehavioralHealthDiagnoses", "behavioral-health-diagnoses"),
        vs("DepressionScreeningScores", "phq9-total-score"),
    ], statements=[
        define("BehavioralConditions", retrieve("Condition", "BehavioralHealthDiagnoses")),
        define("BehavioralDiagnosisCodings", first_codings("BehavioralConditions")),
        define("PHQ9Results", results("DepressionScreeningScores")),
        define("LatestPHQ9", latest("PHQ9Results")),
        define("LatestPHQ9Score", truncate(quantity_value("LatestPHQ9"))),
    ]),
    "behavioral-residential": library("BehavioralResidential", V, includes=[COMMON], valuesets=[
        vs("BehavioralHealthDiagnoses", "behavioral-health-diagnoses"),
    ], statements=[
        define("BehavioralConditions", retrieve("Condition", "BehavioralHealthDiagnoses")),
        define("BehavioralDiagnosisCodings", first_codings("BehavioralConditions")),
        define("HasBehavioralDiagnosis", exists(ref("BehavioralConditions"))),
    ]),
    "inpatient-surgery": library("InpatientSurgery", V, includes=[COMMON], valuesets=[
        vs("BMITests", "bmi-tests"),
        vs("HbA1cTests", "hba1c-tests"),
        vs("DiabetesConditions", "diabetes-conditions"),
    ], statements=[
        define("BMIResults", results("BMITests")),
        define("LatestBMIResult", latest("BMIResults")),
        define("LatestBMI", quantity_value("LatestBMIResult")),
        define("HbA1cResults", results("HbA1cTests")),
        define("LatestHbA1cResult", latest("HbA1cResults")),
        define("LatestHbA1c", quantity_value("LatestHbA1cResult")),
        define("HasDiabetes", exists(retrieve("Condition", "DiabetesConditions"))),
    ]),
}

def main() -> None:
    for folder, elm in LIBRARIES.items():
        path = ROOT / folder / "library.elm.json"
        path.write_text(json.dumps(elm, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT.parent)}")


if __name__ == "__main__":
    main()
