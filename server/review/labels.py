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


def category(name: str | None) -> str:
    return CATEGORIES.get(name or "", name or "")
