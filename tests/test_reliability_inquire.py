"""``Claim/$inquire`` reads a member's cases through an index, never the whole case collection."""

from __future__ import annotations

import asyncio

from server.pas.service import INQUIRY_FIELDS, inquiry_query
from tests.pas_support import pas_request, submit
from tests.test_pas_inquire_update import inquiry_for, returned


def stages(plan: dict) -> list[dict]:
    out = []
    plan = plan.get("queryPlan", plan)  # MongoDB 7's explain nests the plan one level down
    while plan:
        out.append(plan)
        plan = plan.get("inputStage") or (plan.get("inputStages") or [None])[0]
    return out


def test_the_inquiry_query_is_answered_from_the_member_index(server, client):
    request = pas_request("2.2.1", member="PCM000005")
    submit(client, request)
    assert returned(submit(client, inquiry_for(request), "/fhir/Claim/$inquire").json())
    cases = server.app.state.precert.storage.db["pas_cases"]

    async def explain():
        members = ["PCM000005", "http://precert.example.org/sid/member-id|PCM000005"]
        return await cases.find(inquiry_query(members), INQUIRY_FIELDS).explain()

    plan = asyncio.run_coroutine_threadsafe(explain(), server.loop).result(30)["queryPlanner"]["winningPlan"]
    names = [s["stage"] for s in stages(plan)]
    assert "COLLSCAN" not in names, plan
    scan = next(s for s in stages(plan) if s["stage"] == "IXSCAN")
    assert list(scan["keyPattern"]) == ["member_ids"]
