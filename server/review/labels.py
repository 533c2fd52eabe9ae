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


# Names for the sandbox rules' service codes that the DTR value sets do not name (short forms of
# the CPT, HCPCS, RxNorm and X12 descriptors), for the public prior-authorization list.
SERVICE_NAMES = {
    "S9480": "Intensive outpatient psychiatric services, per diem",
    "H0015": "Alcohol and/or drug services; intensive outpatient",
    "H0019": "Behavioral health; long-term residential, per diem",
    "H2036": "Alcohol and/or other drug treatment program, per diem",
    "E0424": "Stationary compressed gaseous oxygen system, rental",
    "E0431": "Portable gaseous oxygen system, rental",
    "E1390": "Oxygen concentrator, single delivery port",
    "G0154": "Skilled nursing services in the home, each 15 minutes",
    "G0299": "Skilled nursing services of a registered nurse in the home, each 15 minutes",
    "G0300": "Skilled nursing services of a licensed practical nurse in the home, each 15 minutes",
    "B4184": "Parenteral nutrition solution; lipids, 10%",
    "B4185": "Parenteral nutrition solution, 10 grams lipids",
    "191831": "infliximab",
    "327361": "adalimumab",
    "1876366": "ocrelizumab",
    "3": "Consultation",
    "33511": "Coronary artery bypass, vein only; 2 venous grafts",
    "33512": "Coronary artery bypass, vein only; 3 venous grafts",
    "33513": "Coronary artery bypass, vein only; 4 venous grafts",
    "33514": "Coronary artery bypass, vein only; 5 venous grafts",
    "33516": "Coronary artery bypass, vein only; 6 or more venous grafts",
    "22630": "Lumbar interbody arthrodesis, posterior technique, single interspace",
    "22633": "Lumbar arthrodesis, combined posterior and interbody technique, single interspace",
}


def category(name: str | None) -> str:
    return CATEGORIES.get(name or "", name or "")
