"""CRD decisions by coverage-assertion-id: what DTR, PAS and reviewers look up after a hook call.

Apart from the HTTP surface (``cds_hooks.routes``) so that domain code can read them without
importing a router.
"""

from __future__ import annotations

# The collection of recorded hook calls and the decisions each answered with.
CALLS = "crd_hook_calls"


async def find_assertion(storage, assertion_id: str, crd=None) -> dict | None:
    """The stored CRD decision with this coverage-assertion-id (for PAS and reviewers). Pass the
    CRD state (``state.services['crd']``) to see answers given in the last moments too."""
    if crd is not None:
        await crd.flush()
    doc = await storage.collection(CALLS).find_one({"assertion_ids": assertion_id})
    if not doc:
        return None
    for d in doc.get("decisions") or []:
        if d.get("assertion_id") == assertion_id:
            return {"hook_instance": doc.get("hook_instance"), "at": doc.get("at"), "patient": doc.get("patient"), **d}
    return None
