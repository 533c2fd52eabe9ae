"""Decisions by payer staff on pended requests: approve, deny (with a reason), modify, request more
information (a Task to the provider), recommend denial, assign. Each action records who and as what,
updates the ClaimResponse and queues the PAS notification, in one transaction.

Who may decide what (:func:`authorize`): case work is for clinical reviewers (role ``reviewer``)
and physician reviewers (role ``medical-director`` with an MD or DO licence); an administrator is
refused. A clinical reviewer may approve, request information, deny for an administrative reason
and recommend denial; denying for a clinical reason, or modifying what was asked, needs a physician
reviewer, who records their credentials and a rationale in their own words. A clinical denial
offers the provider a peer-to-peer discussion (contact and window in the processNote and the case)."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import orjson

from server.auth.principal import Principal
from server.events import CaseDecided
from server.fhir.errors import FHIRError
from server.fhir.repository import Repository, Transaction
from server.pas import cases as case_store
from server.pas.adjudicate import ItemDecision
from server.pas.constants import ReviewAction
from server.pas.reasons import DEFAULT_PEER_TO_PEER, DENIAL_REASONS, peer_to_peer_offer, reason_class
from server.pas.request import PasBundle
from server.pas.response import Echo, build_claim_response, response_bundle
from server.rules import get_rules
from server.pas.tasks import information_request_task, parse_needed, stored_task
from server.storage import utcnow

ACTIONS = ("approve", "deny", "modify", "request-info", "recommend-denial")
WORKING_ROLES = ("reviewer", "medical-director")
RATIONALE_MIN = 20
# Peer-to-peer offer made with every clinical denial: payer.peer_to_peer in the rules (see docs/review.md).
PEER_TO_PEER = DEFAULT_PEER_TO_PEER
INFO_DUE_DAYS = 14


def _bad(msg: str, where: str = "action") -> FHIRError:
    return FHIRError.single(400, "invalid", msg, where)


def plan_item_changes(case: case_store.Case, body: dict) -> dict[int, tuple[str, dict]]:
    """{sequence: (new action code, details)} from a decision request; checked before anything is written."""
    action = body.get("action")
    if action not in ACTIONS:
        raise _bad(f"action must be one of {', '.join(ACTIONS)}")
    pended = {d["sequence"] for d in case["decisions"] if d["action"] == ReviewAction.PENDED}
    items = body.get("items")
    if items is None:
        items = [{"sequence": s} for s in sorted(pended)]
    if not isinstance(items, list) or not items:
        raise _bad("items must be a non-empty list of {sequence, ...}", "items")
    changes: dict[int, tuple[str, dict]] = {}
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("sequence"), int):
            raise _bad(f"items[{i}].sequence must be a whole number", f"items[{i}]")
        seq = it["sequence"]
        if seq not in pended:
            raise FHIRError.single(409, "conflict", f"item {seq} is not pended; only pended items can be decided", f"items[{i}]")
        item_action = it.get("action", action)
        if item_action == "approve":
            changes[seq] = (ReviewAction.APPROVED, {})
        elif item_action == "deny":
            reason = it.get("reason") or body.get("reason") or {}
            code = reason.get("code") if isinstance(reason, dict) else None
            if code not in DENIAL_REASONS:
                raise _bad(f"a denial needs reason.code, one of: {', '.join(DENIAL_REASONS)}", "reason.code")
            text = str(reason.get("text") or "").strip()[:1000]
            changes[seq] = (ReviewAction.DENIED, {"reason": f"{DENIAL_REASONS[code]}{' ' + text if text else ''}", "reason_code": code,
                                   "reason_class": reason_class(code), "text": text})
        elif item_action == "modify":
            qty = it.get("quantity")
            if not isinstance(qty, (int, float)) or isinstance(qty, bool) or qty <= 0:
                raise _bad(f"items[{i}].quantity must be a positive number to modify", f"items[{i}].quantity")
            days = it.get("days")
            if days is not None and (not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 366):
                raise _bad(f"items[{i}].days must be 1-366", f"items[{i}].days")
            changes[seq] = (ReviewAction.MODIFIED, {"quantity": float(qty), "days": days, "reason": str(it.get("note") or body.get("note") or "").strip()[:1000]})
        elif item_action in ("request-info", "recommend-denial"):
            changes[seq] = (ReviewAction.PENDED, {})
        else:
            raise _bad(f"items[{i}].action must be one of {', '.join(ACTIONS)}", f"items[{i}].action")
    if action == "request-info":
        try:
            parse_needed(body.get("needed"))
        except ValueError as exc:
            raise _bad(f"request-info needs 'needed': {exc}", "needed") from None
    if action == "recommend-denial":
        reason = body.get("reason") or {}
        if not isinstance(reason, dict) or reason.get("code") not in DENIAL_REASONS:
            raise _bad(f"a recommendation needs reason.code, one of: {', '.join(DENIAL_REASONS)}", "reason.code")
        if len(str(body.get("rationale") or reason.get("text") or "").strip()) < RATIONALE_MIN:
            raise _bad(f"say why in your own words (rationale, at least {RATIONALE_MIN} characters)", "rationale")
    return changes


def authorize(who, action: str, changes: dict[int, tuple[str, dict]], body: dict) -> dict:
    """Check that ``who`` may take this decision; returns what the audit records of it
    ({"by", "as", "credentials", "rationale"}). 403 for a role that may not."""
    if not who.has(*WORKING_ROLES):
        raise FHIRError.single(403, "forbidden", "administrators manage accounts and settings and do not see or decide cases")
    physician = getattr(who, "physician", False)
    record = {"by": who.username, "as": getattr(who, "acting_as", "reviewer")}
    clinical = any(code == ReviewAction.DENIED and details.get("reason_class") == "clinical" for code, details in changes.values())
    modified = any(code == ReviewAction.MODIFIED for code, _ in changes.values())
    if (clinical or modified) and not physician:
        what = "deny on clinical grounds" if clinical else "modify what was asked"
        raise FHIRError.single(403, "forbidden", f"only a physician reviewer (medical director, MD or DO) may {what}; "
                               "a clinical reviewer may recommend denial (action 'recommend-denial')", "action")
    if clinical or modified:
        texts = [d.get("text") for c, d in changes.values() if c == ReviewAction.DENIED]
        rationale = str(body.get("rationale") or next((t for t in texts if t), "") or body.get("note") or "").strip()
        if len(rationale) < (RATIONALE_MIN if clinical else 1):
            raise _bad(f"a physician's {'denial' if clinical else 'modification'} needs a rationale in your own words "
                       f"(at least {RATIONALE_MIN if clinical else 1} characters)", "rationale")
        credentials = str(body.get("credentials") or "").strip()[:200] or (f"{who.licence}" if getattr(who, "licence", "") else "")
        if not credentials:
            raise _bad("record the credentials you decide under", "credentials")
        record.update(credentials=credentials, rationale=rationale[:2000])
    return record


def denial_text(d: ItemDecision, code: str, explanation: str, rationale: str = "") -> str:
    """The plain-language reason of a denial: the reason, the criterion, the policy it comes from,
    and the reviewer's own rationale."""
    parts = [DENIAL_REASONS[code]]
    if d.criteria_not_met:
        parts.append("Criteria not met: " + "; ".join(d.criteria_not_met)[:600] + ".")
    policy = f"payer rule {d.rule_id}" if d.rule_id else "the plan's coverage policy"
    parts.append(f"Policy: {policy}{f' ({d.category})' if d.category else ''}.")
    for said in dict.fromkeys(t.strip() for t in (explanation, rationale) if t and t.strip()):
        parts.append(said if said.endswith(".") else said + ".")
    return " ".join(parts)


def reissue_response(case: case_store.Case, pas: PasBundle, decisions: list[ItemDecision], auth_number: str | None, base: str, *,
                     reviewed_by_human: bool = False, extra: list[tuple[str, dict]] | None = None,
                     echo: Echo | None = None, reviewer_npi: str | None = None) -> tuple[dict, dict]:
    """The case's ClaimResponse issued again for new decisions (the same id; storing it makes a new
    version). Returns the PAS response Bundle (the answer kept on the case and sent in notifications)
    and the ClaimResponse as stored, its request and patient pointing at the stored Claim and Patient."""
    echo = echo or Echo(pas)  # a caller that built more of the answer (a Task) passes its own
    cr = build_claim_response(pas, echo, response_id=case["response_id"], version=case["version"], decisions=decisions,
                              case_number=case["_id"], auth_number=auth_number, reviewed_by_human=reviewed_by_human,
                              reviewer_npi=reviewer_npi)
    bundle = response_bundle(cr, echo, base, extra=extra or [])
    stored_cr = copy.deepcopy(cr)
    stored_cr["request"] = {"reference": f"Claim/{case['claim_id']}"}
    if case.get("patient_id"):
        stored_cr["patient"] = {"reference": f"Patient/{case['patient_id']}"}
    return bundle, stored_cr


async def decide(state, case_id: str, body: Any, who, base: str) -> dict:
    """Apply a staff decision. ``who`` is the acting :class:`~server.auth.staff.StaffPrincipal`."""
    if not isinstance(body, dict):
        raise _bad("the decision must be a JSON object", "body")
    if not who.has(*WORKING_ROLES):
        raise FHIRError.single(403, "forbidden", "administrators manage accounts and settings and do not see or decide cases")
    reviewer = who.username
    cases = case_store.collection(state.storage)
    case = await cases.find_one({"_id": case_id})
    if case is None:
        raise FHIRError.single(404, "not-found", f"case {case_id[:40]} is not known")
    if case["status"] != "pended":
        raise FHIRError.single(409, "conflict", f"case {case_id} is {case['status']}; only pended cases can be decided")
    changes = plan_item_changes(case, body)
    action = body["action"]
    signed = authorize(who, action, changes, body)
    pas = PasBundle(orjson.loads(case["request"]))
    decisions = [ItemDecision(**d) for d in case["decisions"]]
    for d in decisions:
        if d.sequence not in changes:
            continue
        code, details = changes[d.sequence]
        d.action = code
        d.trace = d.trace + [f"{action} by {reviewer}, {signed['as']}"]
        if code == ReviewAction.APPROVED:
            d.reason = None
            d.authorized_quantity = d.requested_quantity
        elif code == ReviewAction.DENIED:
            d.reason_code = details["reason_code"]
            d.reason_class = details["reason_class"]
            d.reason = denial_text(d, details["reason_code"], details.get("text") or "", signed.get("rationale") or "")
            if d.reason_class == "clinical":
                offer = peer_to_peer_offer(getattr(get_rules(state).payer, "peer_to_peer", None))
                d.reason += (f" A peer-to-peer discussion with the reviewing physician is offered: {offer['contact']},"
                             f" within {offer['window_days']} days of this decision.")
        elif code == ReviewAction.MODIFIED:
            d.reason_code = d.reason_code or "quantity-limit"
            d.reason_class = "clinical"
            d.authorized_quantity = details["quantity"]
            if details.get("days"):
                d.auth_period_days = details["days"]
            d.reason = details.get("reason") or f"Modified by the reviewer: {details['quantity']:g} authorized."
    still_pended = any(d.action == ReviewAction.PENDED for d in decisions)
    auth_number = case.get("auth_number") or (case_store.new_auth_number() if any(d.action in (ReviewAction.APPROVED, ReviewAction.MODIFIED) for d in decisions) else None)
    extra: list[tuple[str, dict]] = []
    task = None
    echo = Echo(pas)
    if action == "request-info":
        # What the reviewer asked for, as the PAS information-request Task of the case's version.
        questionnaire = next((d.questionnaire for d in decisions if d.action == ReviewAction.PENDED and d.questionnaire), None)
        task_url, task = information_request_task(
            pas, echo, version=case["version"], case_id=case["_id"], base=base,
            due=utcnow() + timedelta(days=body.get("due_days") or INFO_DUE_DAYS),
            lines=sorted(changes), attachments=body["needed"], questionnaire=questionnaire,
            reason=("Requested by the reviewer: " + "; ".join(n["text"] for n in parse_needed(body["needed"])))[:500])
        extra.append((task_url, task))
        if pas.claim_entry:
            extra.append((pas.claim_entry.full_url, pas.claim))
    bundle, stored_cr = reissue_response(case, pas, decisions, auth_number, base, reviewed_by_human=True, extra=extra,
                                         echo=echo, reviewer_npi=getattr(who, "npi", "") or None)
    now = utcnow()
    note = str(body.get("note") or "").strip()[:2000]
    detail = {"approve": "approved", "deny": "denied", "modify": "modified", "request-info": "requested more information",
              "recommend-denial": "recommended denial for a physician's decision"}[action]
    said = f"{detail}: items {', '.join(str(s) for s in sorted(changes))}"
    if action == "request-info":
        said += "; asked for: " + "; ".join(n["text"][:200] for n in parse_needed(body["needed"]))
    if action == "recommend-denial":
        reason = body.get("reason") or {}
        said += f"; reason {reason.get('code')}: {str(body.get('rationale') or reason.get('text') or '').strip()[:500]}"
    history = case_store.event(action, reviewer, f"{said} (as {signed['as']})" + (f" ({note})" if note else ""))
    history["as"] = signed["as"]
    update: dict = {
        "decisions": [d.as_dict() for d in decisions],
        "response": orjson.dumps(bundle),
        "auth_number": auth_number,
        "auth_numbers": [a for a in [auth_number] if a],
        "reviewed_by_human": True,
        "status": "pended" if still_pended else "decided",
    }
    if not still_pended:
        update["decided"] = now
        update["decided_by"] = reviewer
        update["decided_as"] = signed["as"]
    if signed.get("rationale"):
        update["signed"] = signed
    if any(d.action == ReviewAction.DENIED and d.reason_class == "clinical" for d in decisions):
        offer = peer_to_peer_offer(getattr(get_rules(state).payer, "peer_to_peer", None))
        update["peer_to_peer"] = {"contact": offer["contact"], "window_days": offer["window_days"],
                                  "until": now + timedelta(days=offer["window_days"]), "physician": reviewer}
    if action == "recommend-denial":
        reason = body.get("reason") or {}
        update["recommendation"] = {"by": reviewer, "as": signed["as"], "at": now, "reason_code": reason.get("code"),
                                    "rationale": str(body.get("rationale") or reason.get("text") or "").strip()[:2000]}
    if task:
        update["info_requested"] = now
        update["info_request"] = {"task_id": task["id"], "needed": [n["text"] for n in parse_needed(body["needed"])],
                                  "due": task["restriction"]["period"]["end"], "by": reviewer}

    async def write(tx: Transaction):
        result = await cases.update_one({"_id": case_id, "status": "pended", "decisions": case["decisions"]},
                                        {"$set": update, "$push": {"history": history}}, session=tx.session)
        if result.matched_count != 1:
            raise FHIRError.single(409, "conflict", f"case {case_id} was decided by someone else meanwhile; reload it")
        await tx.update("ClaimResponse", case["response_id"], stored_cr)
        if task:
            await tx.create("Task", stored_task(task, case), rid=task["id"])
        tx.emit(CaseDecided({**case, **update}, bundle, reviewer))

    repo = Repository.acting(state, Principal("staff", staff=who), base=base)
    await repo.transaction(write, roles=WORKING_ROLES, owner=case.get("owner"), reason=f"review decision: {action}")
    return await cases.find_one({"_id": case_id}, {"request": 0, "response": 0})


async def assign(state, case_id: str, assignee: str | None, by: str) -> dict:
    cases = case_store.collection(state.storage)
    result = await cases.find_one_and_update(
        {"_id": case_id, "status": "pended"},
        {"$set": {"assignee": assignee}, "$push": {"history": case_store.event("assigned", by, f"to {assignee or 'nobody'}")}},
        projection={"request": 0, "response": 0},
        return_document=True,
    )
    if result is None:
        raise FHIRError.single(404, "not-found", f"no pended case {case_id[:40]}")
    return result


async def overturn(state, case_id: str, sequences: list[int] | None, who, base: str, *, note: str = "",
                   appeal_id: str | None = None, within=None, roles: tuple[str, ...] = WORKING_ROLES) -> dict:
    """A denial overturned on appeal: the denied (A3) items become certified (A1), the ClaimResponse
    is updated (a new version, reviewed by a person, with an authorization number) and the PAS
    notification is queued, in one transaction.

    The first determination is kept in ``original_decisions`` (CMS-0057-F reports initial approvals
    and denials separately from approvals after appeal) and ``decided`` keeps its time; the overturn
    is recorded in ``overturned``/``overturned_by``/``appeal`` and the case history. ``within`` is an
    optional ``async fn(session)`` run in the same transaction (the appeal's own record). ``who`` is
    the deciding :class:`~server.auth.staff.StaffPrincipal`, holding one of ``roles`` (those that may
    decide the appeal's stage)."""
    reviewer = who.username
    cases = case_store.collection(state.storage)
    case = await cases.find_one({"_id": case_id})
    if case is None:
        raise FHIRError.single(404, "not-found", f"case {case_id[:40]} is not known")
    if case["status"] != "decided":
        raise FHIRError.single(409, "conflict", f"case {case_id} is {case['status']}; only a decided request can be overturned")
    denied = [d["sequence"] for d in case["decisions"] if d["action"] == ReviewAction.DENIED]
    chosen = denied if not sequences else list(dict.fromkeys(sequences))
    if not chosen or any(s not in denied for s in chosen):
        raise FHIRError.single(409, "conflict", f"only denied items can be overturned; denied items of {case_id}: {denied or 'none'}")
    pas = PasBundle(orjson.loads(case["request"]))
    decisions = [ItemDecision(**d) for d in case["decisions"]]
    for d in decisions:
        if d.sequence in chosen:
            d.action = ReviewAction.APPROVED
            d.reason = f"Certified on appeal{f' ({note[:300]})' if note else ''}."
            d.authorized_quantity = d.requested_quantity
            d.trace = d.trace + [f"denial overturned on appeal{f' {appeal_id}' if appeal_id else ''} by {reviewer}"]
    auth_number = case.get("auth_number") or case_store.new_auth_number()
    bundle, stored_cr = reissue_response(case, pas, decisions, auth_number, base, reviewed_by_human=True,
                                         reviewer_npi=getattr(who, "npi", "") or None)
    now = utcnow()
    update: dict = {
        "decisions": [d.as_dict() for d in decisions],
        "original_decisions": case.get("original_decisions") or case["decisions"],
        "response": orjson.dumps(bundle),
        "auth_number": auth_number,
        "auth_numbers": list(dict.fromkeys((case.get("auth_numbers") or []) + [auth_number])),
        "reviewed_by_human": True,
        "overturned": now,
        "overturned_by": reviewer,
        "appeal": appeal_id,
    }
    history = case_store.event("overturned", reviewer, f"denial overturned on appeal{f' {appeal_id}' if appeal_id else ''}: items "
                               f"{', '.join(str(s) for s in sorted(chosen))}" + (f" ({note[:500]})" if note else ""))

    async def write(tx: Transaction):
        result = await cases.update_one({"_id": case_id, "status": "decided", "decisions": case["decisions"]},
                                        {"$set": update, "$push": {"history": history}}, session=tx.session)
        if result.matched_count != 1:
            raise FHIRError.single(409, "conflict", f"case {case_id} changed meanwhile; reload it")
        await tx.update("ClaimResponse", case["response_id"], stored_cr)
        tx.emit(CaseDecided({**case, **update}, bundle, reviewer))
        if within is not None:
            await within(tx.session)

    repo = Repository.acting(state, Principal("staff", staff=who), base=base)
    await repo.transaction(write, roles=roles, owner=case.get("owner"), reason=f"appeal {appeal_id}: denial overturned" if appeal_id else "denial overturned on appeal")
    return await cases.find_one({"_id": case_id}, {"request": 0, "response": 0})
