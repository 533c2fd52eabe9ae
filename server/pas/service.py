"""The PAS workflow: submit (new requests, updates, cancels), inquire, and reviewer decisions."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from pymongo.errors import DuplicateKeyError
from starlette.concurrency import run_in_threadpool

from server.pas import cases as case_store
from server.shared_cache import SharedCache
from server.pas.adjudicate import (
    ItemDecision, MemberCheck, codings, decide_item, describe, evaluation_input, expedited, member_ids,
    provider_ids, questionnaire_responses,
)
from server.pas.decisions import reissue_response
from server.pas.constants import EXT_ADMIN_REF, EXT_AUTH_NUMBER, EXT_TRANSMISSION, V201, ReviewAction
from server.pas.request import (
    PasBundle, check_request, claim_cancelled, ext_value, item_cancelled, item_change, prior_claim_reference,
)
from server.pas.response import Echo, build_claim_response, needs_documentation, response_bundle
from server.pas.documents import received
from server.pas.tasks import CASE_SYSTEM, information_request_task
from server.pas.versions import negotiate
from server.rules import get_rules
from server.events import CaseDecided, ResourceWritten
from server.fhir.errors import FHIRError
from server.fhir.repository import Repository, Transaction
from server.storage import fhir_instant, utcnow

log = logging.getLogger("precert.pas")


def _token_keys(identifiers: list[dict]) -> list[str]:
    out = []
    for ident in identifiers or []:
        if isinstance(ident, dict) and ident.get("value"):
            out.append(str(ident["value"]))
            if ident.get("system"):
                out.append(f"{ident['system']}|{ident['value']}")
    return out


def sender_ids(pas: PasBundle) -> list[str]:
    """Who sent the request, for the PAS subscription filter (org-identifier): the X12 sender codes
    and the identifiers of the requesting provider."""
    out: list[str] = []
    for ext in pas.claim.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_TRANSMISSION:
            for sub in ext.get("extension") or []:
                if sub.get("url") in ("interchangeSenderID", "applicationSenderCode") and sub.get("valueString"):
                    out.append(sub["valueString"])
    provider = pas.resource(pas.claim.get("provider"))
    stack = [provider] if provider else []
    if provider and provider.get("resourceType") == "PractitionerRole":
        org = pas.resource(provider.get("organization"))
        if org:
            stack.append(org)
    for res in stack:
        out.extend(_token_keys(res.get("identifier")))
    return list(dict.fromkeys(out))


MEMBER_CACHE_SECONDS = 30.0
# The scope that writes a request's case, Claim, ClaimResponse and Task (the scope of Claim/$submit).
SUBMIT_SCOPE = (("Claim", "c"),)


# What an inquiry reads of each candidate case (not the stored request).
INQUIRY_FIELDS = {"_id": 1, "owner": 1, "superseded_by": 1, "provider_ids": 1, "auth_numbers": 1, "codes": 1,
                  "received": 1, "response": 1, "version": 1}


def inquiry_query(members: list[str]) -> dict:
    """An inquiry's candidate cases: only the ``member_ids`` field, so the database answers it from
    the ``member_ids`` index (the embedded database scans the whole collection for a query that
    names any field its index lacks, or for an ``$in`` on a compound index)."""
    return {"member_ids": {"$in": list(dict.fromkeys(members))}}


class PasService:
    def __init__(self, state):
        self.state = state
        self.storage = state.storage
        self.cases = case_store.collection(state.storage)
        # Eligibility look-ups (member id -> Coverage and Patient) are cached briefly, as payers'
        # eligibility systems are; a write to any Coverage or Patient, through any worker, clears
        # them everywhere. Concurrent look-ups of one member share one query (single flight).
        self.members = SharedCache(state.storage.collection("cache_versions"), "pas-members", ttl=MEMBER_CACHE_SECONDS)
        # The payer's own look-up of its member records: not the submitting client's reads, so bound
        # to no organization (Coverage and Patient are not isolated; reads are not audited).
        self.member_records = Repository.system(state, actor="pas-member-lookup")

    async def forget_members(self, event: ResourceWritten) -> None:
        if event.stored.type in ("Coverage", "Patient"):
            await self.members.invalidate()

    async def _member_records(self, ids: list[str]) -> tuple[dict | None, dict | None]:
        """The member's Coverage and Patient, cached briefly (see ``self.members``)."""
        return await self.members.get(tuple(sorted(ids)), lambda: self._load_member(ids))

    @staticmethod
    def member_queries(ids: list[str]) -> list[dict]:
        """The Coverage look-ups by member identifier, most specific first. Two indexed equality
        queries rather than one ``$or``: each is served by its own index
        (``t, del, k.identifier`` and ``t, del, k.subscriber-id``; see ``cases.ensure_indexes``)."""
        keys = ids + [i.split("|", 1)[1] for i in ids if "|" in i]
        return [{"k.identifier": {"$in": ids}}, {"k.subscriber-id": {"$in": sorted({k.lower() for k in keys})}}]

    async def _load_member(self, ids: list[str]) -> tuple[dict | None, dict | None]:
        coverage = None
        for criteria in self.member_queries(ids):
            found, _ = await self.member_records.search("Coverage", criteria, count=1, with_total=False)
            if found:
                coverage = found[0].resource
                break
        patient = None
        ref = ((coverage or {}).get("beneficiary") or {}).get("reference")
        if isinstance(ref, str) and "/" in ref:
            stored = await self.member_records.read(*ref.split("/")[-2:])
            patient = stored.resource if stored and not stored.deleted else None
        return coverage, patient

    # ------------------------------------------------------------------ member checks
    async def check_member(self, pas: PasBundle) -> MemberCheck:
        claim = pas.claim
        submitted = None
        for ins in claim.get("insurance") or []:
            if isinstance(ins, dict) and ins.get("focal") is True:
                submitted = pas.resource(ins.get("coverage"))
        insurer = pas.resource(claim.get("insurer"))
        ours, why = get_rules(self.state).payer_status(submitted, insurer)
        if ours == "no":
            return MemberCheck(error=("T4", f"This request is for another payer: {why}.", "Claim.insurer"))
        ids = member_ids(pas)
        if not ids:
            return MemberCheck(error=("72", "The request carries no member identifier (Coverage.identifier, Coverage.subscriberId or Patient.identifier).", "Claim.insurance.coverage"))
        coverage, patient = await self._member_records(ids)
        if coverage is None:
            return MemberCheck(error=("75", "Subscriber/insured not found: no member of this plan has the identifier given.", "Claim.insurance.coverage"))
        if coverage.get("status") != "active":
            return MemberCheck(error=("78", f"The member's coverage is {coverage.get('status')}; no authorization can be given.", "Claim.insurance.coverage"), coverage=coverage, patient=patient)
        end = (coverage.get("period") or {}).get("end")
        if end and end < utcnow().date().isoformat():
            return MemberCheck(error=("78", f"The member's coverage ended on {end}.", "Claim.insurance.coverage"), coverage=coverage, patient=patient)
        return MemberCheck(coverage=coverage, patient=patient)

    # ------------------------------------------------------------------ submit
    async def submit(self, body: Any, repo: Repository, base: str, *, pinned: str | None = None,
                     client_default: str | None = None) -> tuple[bytes, int]:
        """``repo`` is the caller's repository: the case, Claim, ClaimResponse and Task are written
        through it, owned by the caller's organization, under its ``system/Claim.c``."""
        owner = repo.organization
        # Checking a large request takes long enough to matter; a worker thread does it.
        pas, evidence = await run_in_threadpool(lambda: check_request(body, "submit", pinned=pinned, client_default=client_default))
        version = negotiate(pinned_version=pinned, evidence=evidence, client_default=client_default)
        request_bundle = pas.bundle
        digest = case_store.request_hash(request_bundle)
        key = case_store.idempotency_key(owner, request_bundle, digest)
        # A retry is found by the unique index on the key when the case is written (below), which
        # saves new requests (the usual case) a look-up.

        received = utcnow()
        case_id = case_store.new_case_id()
        claim_id = str(uuid.uuid4())
        response_id = str(uuid.uuid4())
        echo = Echo(pas)
        history = [case_store.event("submitted", "provider", f"Bundle {request_bundle.get('identifier', {}).get('value')}")]
        prior_case = await self._prior_case(pas, owner)
        member = await self.check_member(pas)
        decisions: list[ItemDecision] = []
        errors: list[tuple[str, str, str]] = []
        auth_number = None
        status = "decided"
        if member.error:
            errors.append(member.error)
            status = "error"
            history.append(case_store.event("rejected", "precert", member.error[1]))
        elif prior_case is not None and prior_case.get("status") == "decided" and all(d["action"] == ReviewAction.DENIED for d in prior_case.get("decisions") or []):
            errors.append(("15", "The request this update refers to was denied; a denied request cannot be updated. Submit a new request.", "Claim.related"))
            status = "error"
            history.append(case_store.event("rejected", "precert", "update of a denied request"))
        else:
            decisions = self._decide(pas, member, prior_case)
            actions = {d.action for d in decisions}
            if actions and actions <= {ReviewAction.CANCELLED}:
                status = "cancelled"
            elif ReviewAction.PENDED in actions:
                status = "pended"
            auth_number = (prior_case or {}).get("auth_number") or (case_store.new_auth_number() if actions & {ReviewAction.APPROVED, ReviewAction.MODIFIED} else None)
            for d in decisions:
                history.append(case_store.event("item-" + {ReviewAction.APPROVED: "certified", ReviewAction.DENIED: "not-certified", ReviewAction.PENDED: "pended", ReviewAction.MODIFIED: "modified", ReviewAction.CANCELLED: "cancelled"}[d.action], "precert-rules", f"item {d.sequence}: {d.reason or d.summary}", sequence=d.sequence, rule=d.rule_id))
        cr = build_claim_response(pas, echo, response_id=response_id, version=version, decisions=decisions,
                                  case_number=case_id, auth_number=auth_number, errors=errors,
                                  previous_auth_number=(prior_case or {}).get("auth_number"))
        is_expedited = expedited(pas.claim)
        extra: list[tuple[str, dict]] = []
        task = None
        documentation = [d for d in decisions if needs_documentation(d)]
        if documentation:
            # What is still needed, as the PAS information-request Task (with the Claim it is for).
            task_url, task = information_request_task(
                pas, echo, version=version, case_id=case_id, base=base,
                due=case_store.due_time(received, is_expedited), lines=[d.sequence for d in documentation],
                questionnaire=documentation[0].questionnaire,
                reason="; ".join(d.reason for d in documentation if d.reason)[:500] or "Documentation is needed.")
            extra.append((task_url, task))
            if pas.claim_entry and pas.claim_entry.full_url:
                extra.append((pas.claim_entry.full_url, pas.claim))
        bundle = response_bundle(cr, echo, base, extra=extra)
        body_bytes = orjson.dumps(bundle)
        doc: case_store.Case = {
            "_id": case_id,
            "key": key,
            "hash": digest,
            "owner": owner,
            "version": version,
            "status": status,
            "urgency": "expedited" if is_expedited else "standard",
            "received": received,
            "due": case_store.due_time(received, is_expedited, {d.category for d in decisions if d.category}, rules_clocks(self.state)),
            "retain_until": case_store.retain_until(pas.claim, received),
            "decided": received if status in ("decided", "error", "cancelled") else None,
            "auth_number": auth_number,
            "request": orjson.dumps(request_bundle),
            "response": body_bytes,
            "response_id": response_id,
            "claim_id": claim_id,
            "decisions": [d.as_dict() for d in decisions],
            "errors": [list(e) for e in errors],
            "member_ids": member_ids(pas),
            "provider_ids": provider_ids(pas),
            "sender_ids": sender_ids(pas),
            "claim_keys": self._claim_keys(pas),
            "auth_numbers": [a for a in [auth_number] if a],
            "codes": [c.get("code") for i in pas.claim.get("item") or [] for c in codings(i.get("productOrService"))],
            "categories": sorted({d.category for d in decisions if d.category}),
            "patient_id": ((member.patient or {}).get("id")),
            "coverage_id": ((member.coverage or {}).get("id")),
            "prior": (prior_case or {}).get("_id"),
            "superseded_by": None,
            "reviewed_by_human": False,
            "assignee": None,
            "history": history,
        }
        # Copies for storage (the storage layer adds id and meta); a JSON round trip is the fast deep copy.
        claim_copy = orjson.loads(orjson.dumps(pas.claim))
        claim_copy.pop("id", None)
        cr_stored = orjson.loads(orjson.dumps(cr))
        cr_stored["request"] = {"reference": f"Claim/{claim_id}", **({"identifier": cr["request"]["identifier"]} if cr["request"].get("identifier") else {})}
        if member.patient:
            cr_stored["patient"] = {"reference": f"Patient/{member.patient['id']}"}

        async def write(tx: Transaction):
            session = tx.session
            await self.cases.insert_one(doc, session=session)
            if prior_case is not None:
                await self.cases.update_one(
                    {"_id": prior_case["_id"]},
                    {"$set": {"superseded_by": case_id, "status": "superseded" if prior_case.get("status") != "error" else "error"},
                     "$push": {"history": case_store.event("superseded", "provider", f"updated by {case_id}")}},
                    session=session,
                )
            stored = [("Claim", claim_copy, claim_id), ("ClaimResponse", cr_stored, response_id)]
            if task is not None:
                task_copy = orjson.loads(orjson.dumps(task))
                task_copy["reasonReference"] = {"reference": f"Claim/{claim_id}"}
                task_copy["owner"] = {"identifier": task["owner"]["identifier"]}
                task_copy["requester"] = {"identifier": task["requester"]["identifier"]}
                if member.patient:
                    task_copy["for"] = {"reference": f"Patient/{member.patient['id']}"}
                stored.append(("Task", task_copy, task["id"]))
            await tx.create_many(stored)

        try:
            await repo.transaction(write, requires=SUBMIT_SCOPE, owner=owner, reason="PAS Claim/$submit")
        except DuplicateKeyError:
            # A concurrent submission of the same Bundle won the race: answer with its decision.
            existing = await self.cases.find_one({"key": key}, {"response": 1})
            if existing is None:
                raise
            return self._replay(existing)
        log.info("case %s %s (%d items)", case_id, status, len(decisions))
        return body_bytes, 200

    @staticmethod
    def _replay(existing: dict) -> tuple[bytes, int]:
        """The stored answer (the current one, if a reviewer has decided since)."""
        return existing["response"], 200

    @staticmethod
    def _claim_keys(pas: PasBundle) -> list[str]:
        keys = _token_keys(pas.claim.get("identifier"))
        entry = pas.claim_entry
        if entry and entry.full_url:
            keys.append(entry.full_url)
        return keys

    async def _prior_case(self, pas: PasBundle, owner: str | None) -> dict | None:
        ref = prior_claim_reference(pas.claim)
        if ref is None:
            return None
        keys: list[str] = []
        prior = pas.resolve(ref, pas.claim_entry)
        if prior is not None:
            keys.extend(_token_keys(prior.resource.get("identifier")))
            if prior.full_url:
                keys.append(prior.full_url)
        if isinstance(ref.get("reference"), str):
            keys.append(ref["reference"])
        if isinstance(ref.get("identifier"), dict):
            keys.extend(_token_keys([ref["identifier"]]))
        if not keys:
            return None
        # The latest current case of that request (updates chain; superseded ones are history).
        # Client-chosen Claim identifiers and fullUrls repeat across requests, so the prior request
        # must also be the same member's.
        query = {"claim_keys": {"$in": keys}, "owner": owner, "superseded_by": None, "member_ids": {"$in": member_ids(pas)}}
        cursor = self.cases.find(query).sort("received", -1).limit(1)
        async for doc in cursor:
            return doc
        return None

    def _decide(self, pas: PasBundle, member: MemberCheck, prior_case: dict | None) -> list[ItemDecision]:
        rules = get_rules(self.state)
        responses = questionnaire_responses(pas)
        prior = {d["sequence"]: d for d in (prior_case or {}).get("decisions") or []}
        cancel_all = claim_cancelled(pas.claim)
        out: list[ItemDecision] = []
        for item in pas.claim.get("item") or []:
            if not isinstance(item, dict):
                continue
            seq = int(item.get("sequence") or 0)
            if cancel_all or item_cancelled(item):
                out.append(ItemDecision(sequence=seq, action=ReviewAction.CANCELLED, summary=describe(item), codes=codings(item.get("productOrService")),
                                        reason="Cancelled at the provider's request.", trace=["cancelled by the submitter"]))
                continue
            if seq in prior and item_change(item) is None and prior[seq]["action"] != ReviewAction.CANCELLED:
                kept = ItemDecision(**prior[seq])
                kept.trace = kept.trace + ["unchanged in this update: decision carried over"]
                out.append(kept)
                continue
            determination = rules.evaluate(evaluation_input(pas, item, member.coverage, member.patient))
            out.append(decide_item(item, determination, responses))
        return out

    # ------------------------------------------------------------------ inquire
    async def inquire(self, body: Any, owner: str | None, base: str, *, pinned: str | None = None,
                      client_default: str | None = None) -> tuple[dict, int]:
        pas, evidence = await run_in_threadpool(lambda: check_request(body, "inquire", pinned=pinned, client_default=client_default))
        claim = pas.claim
        members = member_ids(pas)
        providers = provider_ids(pas)
        if not members or not providers:
            # Business errors, answered as PAS says: an inquiry response whose ClaimResponse has `error`.
            version = negotiate(pinned_version=pinned, evidence=evidence, client_default=client_default)
            errors = []
            if not members:
                errors.append(("72", "Invalid/Missing Subscriber/Insured ID: the inquiry must identify the patient by member identifier (Patient.identifier or Coverage).", "Claim.patient"))
            if not providers:
                errors.append(("43", "Invalid/Missing Provider Identification: the inquiry must identify the requesting provider (an identifier such as the NPI on Claim.provider).", "Claim.provider"))
            return self._inquiry_error(pas, version, base, errors), 200
        numbers = [v for v in (ext_value(claim, EXT_AUTH_NUMBER), ext_value(claim, EXT_ADMIN_REF)) if isinstance(v, str)]
        for item in claim.get("item") or []:
            for url in (EXT_AUTH_NUMBER, EXT_ADMIN_REF):
                v = ext_value(item, url)
                if isinstance(v, str):
                    numbers.append(v)
        codes = [c.get("code") for i in claim.get("item") or [] for c in codings(i.get("productOrService")) if c.get("system") != "http://terminology.hl7.org/CodeSystem/data-absent-reason"]
        matches = await self._inquiry_matches(owner, members, providers, numbers, codes)
        answered_in = {doc.get("version") for doc in matches}
        version = negotiate(pinned_version=pinned, evidence=evidence,
                            case_version=next(iter(answered_in)) if len(answered_in) == 1 else None,
                            client_default=client_default)
        if len(answered_in) > 1:
            # One answer speaks one version: requests answered in the other are left out of it.
            matches = [doc for doc in matches if doc.get("version") == version]
        bundles = []
        for doc in matches:
            stored = orjson.loads(doc["response"])
            entries = stored.get("entry") or []
            if not entries:
                continue
            cr = dict(entries[0]["resource"])
            cr["meta"] = {"profile": ["http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-claiminquiryresponse"]}
            inquiry_bundle = dict(stored)
            inquiry_bundle["id"] = str(uuid.uuid4())
            inquiry_bundle["meta"] = {"profile": ["http://hl7.org/fhir/us/davinci-pas/StructureDefinition/profile-pas-inquiry-response-bundle"]}
            inquiry_bundle["identifier"] = {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{inquiry_bundle['id']}"}
            inquiry_bundle["timestamp"] = fhir_instant(utcnow())
            inquiry_bundle["entry"] = [dict(entries[0], resource=cr)] + entries[1:]
            bundles.append(inquiry_bundle)
        if not bundles:
            # No request of the caller's organization matches: the same answer whether or not
            # another organization has one, so nothing leaks across organizations.
            return self._inquiry_error(pas, version, base, [(
                "15", "No prior-authorization request of your organization matches this inquiry; check the member, "
                "provider, authorization or case number and services given.", "Claim")]), 200
        if version == V201:
            return bundles[0], 200
        return {"resourceType": "Parameters", "parameter": [{"name": "return", "resource": b} for b in bundles]}, 200

    async def _inquiry_matches(self, owner: str | None, members: list[str], providers: list[str],
                               numbers: list[str], codes: list[str], limit: int = 50) -> list[dict]:
        """The caller's current cases for one of ``members`` that match the inquiry, newest first.

        The database is asked only what the ``member_ids`` index answers, newest first, a batch of
        ``limit`` at a time; organization, currency, provider, numbers and codes are matched here,
        and reading stops at ``limit`` matches (usually the first batch)."""
        wanted_numbers = set(n.split("-")[0] for n in numbers) | set(numbers)
        wanted_ids = {n.rsplit("-", 1)[0] for n in numbers}
        providers_set, codes_set = set(providers), set(codes)
        out: list[dict] = []
        cursor = self.cases.find(inquiry_query(members), INQUIRY_FIELDS).sort("received", -1).batch_size(limit)
        async for doc in cursor:
            if doc.get("owner") != owner or doc.get("superseded_by") is not None:
                continue
            if not providers_set & set(doc.get("provider_ids") or []):
                continue
            if numbers and not (wanted_numbers & set(doc.get("auth_numbers") or []) or doc["_id"] in wanted_ids):
                continue
            if codes and not codes_set & set(doc.get("codes") or []):
                continue
            out.append(doc)
            if len(out) >= limit:
                break
        await cursor.close()
        return out

    @staticmethod
    def _inquiry_error(pas: PasBundle, version: str, base: str, errors: list[tuple[str, str, str]]) -> dict:
        echo = Echo(pas)
        cr = build_claim_response(pas, echo, response_id=str(uuid.uuid4()), version=version, decisions=None,
                                  case_number="", auth_number=None, errors=errors, inquiry=True,
                                  disposition="The inquiry could not be answered.")
        bundle = response_bundle(cr, echo, base, inquiry=True)
        if version == V201:
            return bundle
        return {"resourceType": "Parameters", "parameter": [{"name": "return", "resource": bundle}]}

    # ------------------------------------------------------------------ CDex $submit-attachment
    async def submit_attachment(self, params: dict, repo: Repository, base: str) -> str:
        owner = repo.organization
        case_id = params["trackingId"]["value"]
        case = await self.cases.find_one({"_id": case_id, "owner": owner})
        member = params["memberId"]
        member_keys = {member["value"], f"{member.get('system')}|{member['value']}"}
        if case is None or not member_keys & set(case.get("member_ids") or []):
            raise FHIRError.single(404, "not-found", f"no prior-authorization request of your organization has tracking id {case_id[:40]} for this member")
        if case["status"] != "pended":
            raise FHIRError.single(409, "conflict", f"request {case_id} is {case['status']}; it takes no more attachments")
        decisions = [ItemDecision(**d) for d in case["decisions"]]
        waiting = {d.sequence for d in decisions if d.action == ReviewAction.PENDED}
        for i, att in enumerate(params["attachments"]):
            unknown = [n for n in att["lines"] if n not in waiting]
            if unknown:
                raise FHIRError.single(422, "business-rule", f"attachment {i + 1} names line {unknown[0]}, which is not waiting for documentation", "Parameters.parameter.where(name='attachment')")
        request_bundle = orjson.loads(case["request"])
        base_url_of = (request_bundle.get("entry") or [{}])[0].get("fullUrl", "urn:x/Claim/x").rsplit("/", 2)[0]
        seen = {orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in case.get("attachments_received") or []}
        fresh = [a for a in params["attachments"] if orjson.dumps(a["content"], option=orjson.OPT_SORT_KEYS) not in seen]
        if not fresh:
            raise FHIRError.single(409, "duplicate", "these attachments were already received for this request")
        for att in fresh:
            content = att["content"]
            rid = content.get("id") or uuid.uuid4().hex
            request_bundle.setdefault("entry", []).append({"fullUrl": f"{base_url_of}/{content['resourceType']}/{rid}-{uuid.uuid4().hex[:6]}", "resource": content})
        pas = PasBundle(request_bundle)
        member_check = await self.check_member(pas)
        responses = questionnaire_responses(pas)
        rules = get_rules(self.state)
        items = {int(i.get("sequence") or 0): i for i in pas.claim.get("item") or [] if isinstance(i, dict)}
        history = [case_store.event("attachments-received", "provider", f"{len(fresh)} attachment(s)")]
        for k, d in enumerate(decisions):
            if d.action == ReviewAction.PENDED and needs_documentation(d) and d.sequence in items:
                again = received(decide_item(items[d.sequence], rules.evaluate(evaluation_input(pas, items[d.sequence], member_check.coverage, member_check.patient)), responses), fresh)
                decisions[k] = again
                history.append(case_store.event("item-redecided", "precert-rules", f"item {again.sequence}: {again.action} {again.reason or ''}".strip(), sequence=again.sequence))
        still_pended = any(d.action == ReviewAction.PENDED for d in decisions)
        auth_number = case.get("auth_number") or (case_store.new_auth_number() if any(d.action in (ReviewAction.APPROVED, ReviewAction.MODIFIED) for d in decisions) else None)
        bundle, stored_cr = reissue_response(case, pas, decisions, auth_number, base)
        update = {
            "request": orjson.dumps(request_bundle),
            "decisions": [d.as_dict() for d in decisions],
            "response": orjson.dumps(bundle),
            "auth_number": auth_number,
            "auth_numbers": [a for a in [auth_number] if a],
            "status": "pended" if still_pended else "decided",
        }
        if not still_pended:
            update["decided"] = utcnow()
            update["decided_by"] = "precert-rules"

        async def write(tx: Transaction):
            session = tx.session
            result = await self.cases.update_one(
                {"_id": case_id, "status": "pended", "decisions": case["decisions"]},
                {"$set": update, "$push": {"history": {"$each": history}, "attachments_received": {"$each": [a["content"] for a in fresh]}}},
                session=session)
            if result.matched_count != 1:
                raise FHIRError.single(409, "conflict", f"request {case_id} changed meanwhile; send the attachments again")
            await tx.update("ClaimResponse", case["response_id"], stored_cr)
            # The information-request Tasks of this case are answered.
            tasks, _ = await tx.search("Task", {"k.identifier": {"$in": [f"{CASE_SYSTEM}|{case_id}"]}}, count=20, with_total=False)
            for stored_task in tasks:
                answered = dict(stored_task.resource)
                if answered.get("status") in ("requested", "received", "accepted", "in-progress"):
                    answered["status"] = "completed"
                    answered["lastModified"] = fhir_instant(utcnow())
                    await tx.update("Task", stored_task.id, answered)
            # Decided, or still pended with a re-issued response: the submitter hears either way.
            tx.emit(CaseDecided({**case, **update}, bundle, repo.principal.agent_id))

        await repo.transaction(write, requires=SUBMIT_SCOPE, owner=owner, reason="CDex Claim/$submit-attachment")
        return ("Attachments received; the request is still pended." if still_pended
                else "Attachments received; the request has been decided again.")

def rules_clocks(state) -> dict:
    """The payer's decision clocks by service category (see server.pas.cases.due_time)."""
    return getattr(get_rules(state).payer, "clocks", None) or {}
