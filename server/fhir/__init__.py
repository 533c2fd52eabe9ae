"""FHIR R4 building blocks shared by every Precert surface."""
