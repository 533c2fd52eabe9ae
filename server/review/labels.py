"""Names people read for the codes the workbench shows."""

CATEGORIES = {
    "inpatient-surgery": "Inpatient surgery",
    "advanced-imaging": "Advanced imaging",
    "specialty-drugs": "Specialty drugs",
    "dme-home-oxygen": "Home oxygen",
    "dme-wheelchair": "Wheelchairs",
    "dme-prosthetic": "Prosthetics",
    "behavioral-iop": "Behavioral health: intensive outpatient",
    "behavioral-residential": "Behavioral health: residential",
}

STATUSES = {
    "pended": "Pended",
    "decided": "Decided",
    "cancelled": "Cancelled",
    "error": "Error",
    "superseded": "Superseded",
}

EVENTS = {
    "submitted": "Submitted",
    "item-certified": "Item certified",
    "item-not-certified": "Item not certified",
    "item-pended": "Item pended",
    "item-modified": "Item modified",
    "item-cancelled": "Item cancelled",
    "approve": "Approved",
    "deny": "Denied",
    "modify": "Modified",
    "request-info": "More information requested",
    "assigned": "Assigned",
    "note": "Note",
    "extended": "Timeframe extended",
    "notification-queued": "Notification queued",
    "superseded": "Superseded",
    "rejected": "Rejected",
    "overturned": "Overturned on appeal",
    "appeal-filed": "Appeal filed",
    "appeal-stage": "Appeal stage",
    "appeal-closed": "Appeal closed",
}


# ICD-10-CM names for the diagnosis codes the sandbox and the Da Vinci examples use, for requests
# that send a code without its display. Not a terminology service: codes outside this list are
# shown as sent, and a display in the request always wins.
ICD10_NAMES = {
    "C18.9": "Malignant neoplasm of colon, unspecified",
    "E11.9": "Type 2 diabetes mellitus without complications",
    "F10.20": "Alcohol dependence, uncomplicated",
    "F33.2": "Major depressive disorder, recurrent severe without psychotic features",
    "F41.1": "Generalized anxiety disorder",
    "G35": "Multiple sclerosis",
    "G83.4": "Cauda equina syndrome",
    "G89.4": "Chronic pain syndrome",
    "I25.10": "Atherosclerotic heart disease of native coronary artery without angina pectoris",
    "J44.9": "Chronic obstructive pulmonary disease, unspecified",
    "J96.11": "Chronic respiratory failure with hypoxia",
    "L40.0": "Psoriasis vulgaris",
    "M06.9": "Rheumatoid arthritis, unspecified",
    "M17.11": "Unilateral primary osteoarthritis, right knee",
    "M54.16": "Radiculopathy, lumbar region",
    "R09.02": "Hypoxemia",
    "R26.2": "Difficulty in walking, not elsewhere classified",
    "R51.9": "Headache, unspecified",
    "Z89.611": "Acquired absence of right leg above knee",
    "Z89.612": "Acquired absence of left leg above knee",
}


def category(name: str | None) -> str:
    return CATEGORIES.get(name or "", name or "")
