// The demo EHR: one prior authorization from order to decision, as an EHR integration runs it, against
// this Precert sandbox's public endpoints. Plain DOM, no framework; every message is logged with its JSON.
//
// Steps: pick a member and an order (the categories and codes come from the payer's public
// /rules/prior-auth-list) -> CDS Hooks order-select / order-sign with prefetch from the EHR's records
// -> cards and coverage-information -> Questionnaire/$questionnaire-package -> the form, pre-filled by
// running the package's ELM here (cql-execution, ./cql-bundle.js) against the member's chart ->
// QuestionnaireResponse in a PAS Bundle -> Claim/$submit -> decision; a rest-hook Subscription to the
// EHR's inbox (/demo-ehr/inbox/<box>, polled) shows the notification when a reviewer decides.

import { el, renderForm, readAnswers } from "./form.js";

const FHIR_JSON = { "Content-Type": "application/fhir+json", Accept: "application/fhir+json" };
const CRD_EXT = "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";
const PAS_SD = "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/";
const EXT_REVIEW_ACTION_CODE = PAS_SD + "extension-reviewActionCode";
const EXT_ADMIN_REF = PAS_SD + "extension-administrationReferenceNumber";
const BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const PAS_TOPIC = "http://hl7.org/fhir/us/davinci-pas/SubscriptionTopic/PASSubscriptionTopic";
const EXT_CQF_LIBRARY = "http://hl7.org/fhir/StructureDefinition/cqf-library";
const NPI = "http://hl7.org/fhir/sid/us-npi";
const REVIEW_ACTIONS = { A1: "Certified in total", A2: "Certified in part", A3: "Not certified", A4: "Pended", A6: "Modified", NA: "No action required" };
// Which sandbox member's chart has something for each category's form, and who would order it.
const SUGGESTED = {
  "dme-home-oxygen": ["pat-001", "role-003"], "advanced-imaging": ["pat-002", "role-001"],
  "inpatient-surgery": ["pat-002", "role-002"], "behavioral-iop": ["pat-003", "role-004"],
  "behavioral-residential": ["pat-003", "role-004"], "dme-prosthetic": ["pat-004", "role-002"],
  "dme-wheelchair": ["pat-007", "role-002"], "specialty-drugs": ["pat-005", "role-001"],
};

const $ = (sel) => document.querySelector(sel);
const state = { records: new Map(), services: [], order: null, crd: null, pkg: null, form: null, request: null,
  response: null, subscriptions: new Map(), box: null, seen: new Set(), polling: null, touched: false };

// ------------------------------------------------------------------ DOM helpers
/** A "JSON" toggle button and the pretty-printed JSON it shows and hides. */
function jsonToggle(value, label = "JSON") {
  const pre = el("pre", { class: "json", hidden: true, text: JSON.stringify(value, null, 2) });
  const button = el("button", { type: "button", class: "json-toggle", text: label });
  button.setAttribute("aria-expanded", "false");
  button.addEventListener("click", () => {
    pre.hidden = !pre.hidden;
    button.setAttribute("aria-expanded", String(!pre.hidden));
  });
  return el("span", { class: "json-box" }, button, pre);
}

function status(text, kind = "") {
  const s = $("#status");
  s.textContent = text;
  s.className = "status " + kind;
}

// ------------------------------------------------------------------ HTTP, logged
const tokens = new Map(); // organization id -> {access_token, until}

/** With authentication enforced, the FHIR calls carry a token of the sandbox client of the ordering
 * clinician's organization (minted by /demo-ehr/token); otherwise none. */
async function authorization(url) {
  if (document.body.dataset.enforcing !== "true" || !url.startsWith("/fhir")) return {};
  const role = get(`PractitionerRole/${state.order?.role || $("#clinician").value}`);
  const org = role.organization.reference.split("/")[1];
  let held = tokens.get(org);
  if (!held || held.until < Date.now()) {
    const res = await fetch("/demo-ehr/token", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ organization: org }) });
    const json = await res.json();
    if (!res.ok) throw new Error(`sandbox token: ${json.message}`);
    held = { access_token: json.access_token, until: Date.now() + (json.expires_in - 30) * 1000 };
    tokens.set(org, held);
  }
  return { Authorization: `Bearer ${held.access_token}` };
}

async function call(label, method, url, body, headers = FHIR_JSON) {
  headers = { ...headers, ...(await authorization(url)) };
  const item = el("li", { class: "msg" }, el("span", { class: "label", text: label }), " ",
    el("code", { text: `${method} ${url}` }));
  $("#log").append(item);
  if (body !== undefined) item.append(" ", jsonToggle(body, "request JSON"));
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    item.append(el("span", { class: "bad", text: ` network error: ${err.message}` }));
    throw err;
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = { text }; }
  item.append(" → ", el("span", { class: response.ok ? "ok" : "bad", text: String(response.status) }));
  if (json !== null) item.append(" ", jsonToggle(json, "response JSON"));
  if (!response.ok) {
    const why = json?.issue?.[0]?.diagnostics || json?.message || json?.detail || text.slice(0, 200);
    throw new Error(`${label}: ${response.status} ${why}`);
  }
  return json;
}

// ------------------------------------------------------------------ the EHR's records
const get = (ref) => state.records.get(ref);
const ofType = (type) => [...state.records.values()].filter((r) => r.resourceType === type);
const nameOf = (r) => { const n = r?.name?.[0] || {}; return [n.prefix?.[0], ...(n.given || []), n.family].filter(Boolean).join(" "); };
const searchset = (resources) => ({ resourceType: "Bundle", type: "searchset", total: resources.length,
  entry: resources.map((r) => ({ fullUrl: `${location.origin}/ehr/${r.resourceType}/${r.id}`, resource: r })) });
const today = () => new Date().toISOString().slice(0, 10);
const uid = () => crypto.randomUUID();

function coverageOf(patientId) {
  return ofType("Coverage").find((c) => c.beneficiary?.reference === `Patient/${patientId}`);
}

function chartOf(patientId) {
  return [...state.records.values()].filter((r) => r.subject?.reference === `Patient/${patientId}`);
}

function orderKind(category) {
  if (category.startsWith("dme-")) return "DeviceRequest";
  if (category === "specialty-drugs") return "MedicationRequest";
  return "ServiceRequest";
}

// ------------------------------------------------------------------ step 1: member and order
function fillPickers(priorAuthList) {
  const members = ofType("Patient");
  $("#member").replaceChildren(...members.map((p) => {
    const cov = coverageOf(p.id);
    const plan = cov?.class?.find((c) => c.type?.coding?.[0]?.code === "plan")?.name;
    return el("option", { value: p.id, text: `${nameOf(p)} (${p.id}, born ${p.birthDate}, ${plan}${cov?.status !== "active" ? ", coverage " + cov?.status : ""})` });
  }));
  $("#clinician").replaceChildren(...ofType("PractitionerRole").map((role) => {
    const prac = get(role.practitioner.reference);
    const org = get(role.organization.reference);
    return el("option", { value: role.id, text: `${nameOf(prac)}, ${role.specialty?.[0]?.coding?.[0]?.display} (${org?.name})` });
  }));
  const byCategory = new Map();
  for (const svc of priorAuthList.services) {
    if (!svc.category) continue;
    const list = byCategory.get(svc.category) || [];
    for (const c of svc.codes) {
      const code = c.code || (c.range || "").split("-")[0];
      if (code) list.push({ system: c.system, code, display: svc.title, rule: svc.rule });
    }
    byCategory.set(svc.category, list);
  }
  state.catalog = byCategory;
  $("#category").replaceChildren(...[...byCategory.keys()].map((k) => el("option", { value: k, text: k })));
  $("#category").value = byCategory.has("dme-home-oxygen") ? "dme-home-oxygen" : [...byCategory.keys()][0];
  onCategory();
}

function onCategory() {
  const category = $("#category").value;
  const codes = state.catalog.get(category) || [];
  $("#order").replaceChildren(...codes.map((c, i) => el("option", { value: String(i), text: `${c.code} — ${c.display}` })));
  const [member, role] = SUGGESTED[category] || [];
  if (!state.touched && member) $("#member").value = member;
  if (role) $("#clinician").value = role;
  showMember();
}

function showMember() {
  const pid = $("#member").value;
  const chart = chartOf(pid);
  const lines = chart.map((r) => {
    const what = r.code?.text || r.medicationCodeableConcept?.text || r.resourceType;
    const value = r.valueQuantity ? ` ${r.valueQuantity.value} ${r.valueQuantity.unit}` : "";
    const when = r.recordedDate || r.effectiveDateTime || r.performedDateTime || r.authoredOn || "";
    return el("li", { text: `${r.resourceType}: ${what}${value} ${when.slice(0, 10)}${r.status && r.status !== "final" && r.resourceType === "Observation" ? " (" + r.status + ")" : ""}` });
  });
  $("#member-summary").replaceChildren(el("p", { text: `Chart of ${nameOf(get("Patient/" + pid))}: ${chart.length} entries` }),
    el("ul", { class: "chart" }, lines));
}

function buildOrder() {
  const category = $("#category").value;
  const pick = state.catalog.get(category)[Number($("#order").value)];
  const pid = $("#member").value;
  const role = $("#clinician").value;
  const coverage = coverageOf(pid);
  const kind = orderKind(category);
  const concept = { coding: [{ system: pick.system, code: pick.code, display: pick.display }], text: pick.display };
  const quantity = Math.max(1, Number($("#quantity").value) || 1);
  const order = { resourceType: kind, id: `demo-${uid().slice(0, 8)}`, status: "draft", intent: "order" };
  if (kind === "MedicationRequest") Object.assign(order, { medicationCodeableConcept: concept, dispenseRequest: { quantity: { value: quantity } } });
  else if (kind === "DeviceRequest") order.codeCodeableConcept = concept;
  else Object.assign(order, { code: concept, quantityQuantity: { value: quantity } });
  Object.assign(order, { subject: { reference: `Patient/${pid}` }, authoredOn: today(),
    requester: { reference: `PractitionerRole/${role}` }, insurance: [{ reference: `Coverage/${coverage.id}` }] });
  return { order, category, pick, pid, role, coverage, quantity };
}

/** The hook request: context and the prefetch the discovery document asks for, from the EHR's records. */
function hookRequest(hook, draft) {
  const { order, pid, role, coverage } = draft;
  const roleRes = get(`PractitionerRole/${role}`);
  const available = {
    patient: get(`Patient/${pid}`),
    coverage: searchset(coverage ? [coverage] : []),
    practitionerRoles: searchset([roleRes]),
    practitioners: searchset([get(roleRes.practitioner.reference)]),
    organizations: searchset([get(roleRes.organization.reference)]),
  };
  const wanted = state.services.find((s) => s.hook === hook)?.prefetch || {};
  const prefetch = Object.fromEntries(Object.keys(wanted).filter((k) => k in available).map((k) => [k, available[k]]));
  const draftOrders = { resourceType: "Bundle", type: "collection", entry: [{ resource: order }] };
  const context = { userId: `PractitionerRole/${role}`, patientId: pid, draftOrders };
  if (hook === "order-select") context.selections = [`${order.resourceType}/${order.id}`];
  return { hook, hookInstance: uid(), context, prefetch };
}

async function runHook(hook) {
  try {
    const draft = buildOrder();
    const service = state.services.find((s) => s.hook === hook);
    if (!service) throw new Error(`the payer offers no ${hook} service`);
    status(`Calling ${hook}…`);
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (document.body.dataset.enforcing === "true") {
      // The EHR signs each hook call (CDS Hooks "Trusting CDS Clients"); the sandbox signs for the demo EHR.
      const res = await fetch("/demo-ehr/hook-token", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ service: service.id }) });
      const json = await res.json();
      if (!res.ok) throw new Error(`CDS Hooks JWT: ${json.message}`);
      headers.Authorization = `Bearer ${json.jwt}`;
    }
    const response = await call(`CRD ${hook}`, "POST", `/cds-services/${service.id}`, hookRequest(hook, draft), headers);
    // The coverage-information comes back on the order (a systemAction update); the EHR keeps it.
    const updated = (response.systemActions || []).map((a) => a.resource).find((r) => r?.id === draft.order.id);
    state.order = { ...draft, order: updated || draft.order };
    state.crd = response;
    showCrd(hook, response, state.order.order);
    status(`${hook}: ${(response.cards || []).length} card(s)`, "ok");
  } catch (err) {
    status(err.message, "bad");
  }
}

// ------------------------------------------------------------------ step 2: cards and coverage-information
function coverageInformation(order) {
  return (order.extension || []).filter((e) => e.url === CRD_EXT).map((ext) => {
    const info = {};
    for (const sub of ext.extension || []) {
      const key = Object.keys(sub).find((k) => k.startsWith("value"));
      const v = sub[key];
      const text = typeof v === "object" ? (v.reference || v.text || v.value || v.coding?.[0]?.code || JSON.stringify(v)) : String(v);
      (info[sub.url] ||= []).push(text);
    }
    return info;
  });
}

function showCrd(hook, response, order) {
  $("#step-crd").hidden = false;
  const cards = (response.cards || []).map((card) => el("article", { class: `card ${card.indicator}`, "data-indicator": card.indicator },
    el("h3", { text: card.summary }),
    card.detail ? el("p", { text: card.detail }) : null,
    card.links?.length ? el("ul", {}, card.links.map((l) => el("li", {}, /^https?:\/\//.test(l.url || "")
      ? el("a", { href: l.url, text: l.label, rel: "noreferrer", target: "_blank" }) : el("span", { text: `${l.label} (${l.type} link)` })))) : null,
    card.suggestions?.length ? el("p", { class: "hint", text: `Suggestions: ${card.suggestions.map((s) => s.label).join("; ")}` }) : null,
    el("p", { class: "source", text: `${card.source?.label || ""} · ${card.source?.topic?.display || ""}` }),
    jsonToggle(card)));
  $("#cards").replaceChildren(el("h3", { text: `Cards from ${hook}` }), ...(cards.length ? cards : [el("p", { text: "No cards." })]),
    el("p", {}, "Whole response: ", jsonToggle(response)));
  const infos = coverageInformation(order);
  const rows = infos.flatMap((info, i) => Object.entries(info).map(([k, v]) =>
    el("tr", { "data-key": k }, el("th", { text: infos.length > 1 ? `${k} (${i + 1})` : k }), el("td", { text: v.join(", ") }))));
  $("#coverage-info").replaceChildren(el("h3", { text: "Coverage information (on the order)" }),
    rows.length ? el("table", { class: "grid", id: "coverage-table" }, el("tbody", {}, rows)) : el("p", { text: "None returned." }),
    el("p", {}, "Updated order: ", jsonToggle(order)));
  const questionnaires = infos.flatMap((i) => i.questionnaire || []);
  $("#open-dtr").hidden = questionnaires.length === 0;
  $("#submit-bare").hidden = !infos.some((i) => (i["pa-needed"] || []).includes("auth-needed"));
  $("#step-dtr").hidden = true;
  $("#step-pas").hidden = true;
  $("#decision").replaceChildren();
}

// ------------------------------------------------------------------ step 3: DTR
let engine = null;

function decodeElm(library) {
  const content = (library.content || []).find((c) => c.contentType === "application/elm+json");
  if (!content) return null;
  const bytes = Uint8Array.from(atob(content.data), (ch) => ch.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

async function openDtr() {
  try {
    const { order, coverage, pid } = state.order;
    status("Fetching the questionnaire package…");
    const params = { resourceType: "Parameters", parameter: [{ name: "coverage", resource: coverage }, { name: "order", resource: order }] };
    const pkg = await call("DTR $questionnaire-package", "POST", "/fhir/Questionnaire/$questionnaire-package", params);
    const bundle = (pkg.parameter || []).find((p) => p.resource?.resourceType === "Bundle")?.resource;
    if (!bundle) throw new Error("the package has no Bundle");
    const resources = bundle.entry.map((e) => e.resource);
    const questionnaire = resources.find((r) => r.resourceType === "Questionnaire");
    const started = resources.find((r) => r.resourceType === "QuestionnaireResponse");
    const libraries = resources.filter((r) => r.resourceType === "Library");
    const valuesets = resources.filter((r) => r.resourceType === "ValueSet");
    state.pkg = { questionnaire, started, libraries, valuesets, bundle: pkg };

    // SDC/DTR pre-population: run the Questionnaire's cqf-library, then read each initialExpression.
    const mainUrl = (questionnaire.extension || []).find((e) => e.url === EXT_CQF_LIBRARY)?.valueCanonical?.split("|")[0];
    const main = libraries.find((l) => l.url === mainUrl) || libraries[0];
    const elm = libraries.map(decodeElm).filter(Boolean);
    const patientBundle = { resourceType: "Bundle", type: "collection",
      entry: [{ resource: get(`Patient/${pid}`) }, ...chartOf(pid).map((r) => ({ resource: r }))] };
    $("#prefill-status").textContent = `Running ${main.name} (${elm.length} libraries) with cql-execution…`;
    const t0 = performance.now();
    engine ||= await import("./cql-bundle.js");
    const t1 = performance.now();
    const results = await engine.runLibrary(elm, main.name, valuesets, [patientBundle]);
    const t2 = performance.now();
    const defines = results[pid] || {};
    state.prefill = { library: main.name, defines };
    state.form = renderForm($("#dtr-form"), questionnaire, { valuesets, started, defines, library: main.name });
    const filled = state.form.prefilledCount();
    $("#prefill-status").replaceChildren(
      `Pre-filled ${filled} answer(s) from ${main.name} against ${nameOf(get("Patient/" + pid))}'s chart (${patientBundle.entry.length - 1} resources; `
      + `engine loaded in ${Math.round(t1 - t0)} ms, CQL run in ${Math.round(t2 - t1)} ms). `,
      jsonToggle({ library: main.name, results: defines }, "CQL results JSON"), " ", jsonToggle(questionnaire, "Questionnaire JSON"));
    $("#prefill-status").dataset.prefilled = String(filled);
    $("#step-dtr").hidden = false;
    $("#step-pas").hidden = true;
    status(`DTR: ${questionnaire.title}`, "ok");
  } catch (err) {
    $("#prefill-status").textContent = "";
    status(err.message, "bad");
  }
}

// ------------------------------------------------------------------ step 4: PAS
function fullUrl(r) { return `${location.origin}/fhir/${r.resourceType}/${r.id}`; }

function serviceType(orderType) {
  if (orderType === "MedicationRequest") return { code: "88", display: "Pharmacy" };
  if (orderType === "DeviceRequest") return { code: "12", display: "Durable Medical Equipment Purchase" };
  return { code: "1", display: "Medical Care" };
}

function pasBundle(qr) {
  const { order, pick, pid, role, coverage, quantity } = state.order;
  const roleRes = get(`PractitionerRole/${role}`);
  const provider = get(roleRes.organization.reference);
  const payer = get(coverage.payor[0].reference);
  const practitioner = get(roleRes.practitioner.reference);
  const created = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const claim = {
    resourceType: "Claim", id: `demo-${uid().slice(0, 8)}`, status: "active",
    identifier: [{ system: `${location.origin}/demo-ehr/claims`, value: uid() }],
    type: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/claim-type", code: order.resourceType === "MedicationRequest" ? "pharmacy" : "professional" }] },
    use: "preauthorization", patient: { reference: `Patient/${pid}` }, created,
    insurer: { reference: `Organization/${payer.id}` }, provider: { reference: `Organization/${provider.id}` },
    priority: { coding: [{ system: "http://terminology.hl7.org/CodeSystem/processpriority", code: "normal" }] },
    // The ordering clinician in their role, for the whole claim (PAS careTeamClaimScope).
    careTeam: [{ sequence: 1, provider: { reference: `PractitionerRole/${roleRes.id}` },
      extension: [{ url: "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-careTeamClaimScope", valueBoolean: true }] }],
    insurance: [{ sequence: 1, focal: true, coverage: { reference: `Coverage/${coverage.id}` } }],
    item: [{ sequence: 1, careTeamSequence: [1],
      // X12 service type (required by the PAS Claim profile): pharmacy, durable medical equipment, or medical care.
      category: { coding: [{ system: "https://codesystem.x12.org/005010/1365", ...serviceType(order.resourceType) }] },
      // PAS 2.2.1: a health services review (X12 1525 HS), an initial request (X12 1322 I), in the office.
      extension: [
        { url: "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-serviceItemRequestType",
          valueCodeableConcept: { coding: [{ system: "https://codesystem.x12.org/005010/1525", code: "HS", display: "Health Services Review" }] } },
        { url: "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-certificationType",
          valueCodeableConcept: { coding: [{ system: "https://codesystem.x12.org/005010/1322", code: "I", display: "Initial" }] } }],
      locationCodeableConcept: { coding: [{ system: "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set", code: "11", display: "Office" }] },
      productOrService: { coding: [{ system: pick.system, code: pick.code, display: pick.display }] },
      quantity: { value: quantity }, servicedDate: today() }],
  };
  const entries = [claim, get(`Patient/${pid}`), coverage, provider, payer, roleRes, practitioner];
  if (qr) {
    entries.push(qr);
    claim.supportingInfo = [{ sequence: 1, category: { coding: [{ system: "http://hl7.org/fhir/us/davinci-pas/CodeSystem/PASTempCodes", code: "additionalInformation" }] },
      // PAS 2.2.1 describes each attached document (X12 PWK): the report type and how it is sent.
      extension: [{ url: "http://hl7.org/fhir/us/davinci-pas/StructureDefinition/extension-documentInformation", extension: [
        { url: "reportTypeCode", valueCodeableConcept: { coding: [{ system: "https://codesystem.x12.org/005010/755", code: "OZ" }] } },
        { url: "transmissionMethod", valueCodeableConcept: { coding: [{ system: "https://codesystem.x12.org/005010/756", code: "EL" }] } }] }],
      valueReference: { reference: fullUrl(qr) } }];
  }
  return { resourceType: "Bundle", type: "collection", timestamp: created,
    identifier: { system: `${location.origin}/demo-ehr/bundles`, value: uid() },
    entry: entries.map((r) => ({ fullUrl: fullUrl(r), resource: r })) };
}

function ext(resource, url) { return (resource?.extension || []).find((e) => e.url === url); }

function decisionOf(responseBundle) {
  const cr = responseBundle.entry?.[0]?.resource || {};
  const item = cr.item?.[0] || {};
  let code = null;
  for (const adj of item.adjudication || []) {
    for (const e of adj.extension || []) {
      const sub = (e.extension || []).find((s) => s.url === EXT_REVIEW_ACTION_CODE) || (e.url === EXT_REVIEW_ACTION_CODE ? e : null);
      code ||= sub?.valueCodeableConcept?.coding?.[0]?.code;
    }
  }
  const admin = ext(item, EXT_ADMIN_REF)?.valueString || null;
  // The final decision may carry no reference number; the ClaimResponse names the request it answers.
  const request = cr.request?.identifier?.value || cr.identifier?.[0]?.value || null;
  return { cr, code, label: REVIEW_ACTIONS[code] || code || cr.outcome, admin, request, preAuthRef: cr.preAuthRef,
    notes: (cr.processNote || []).map((n) => n.text) };
}

function showDecision(target, d, title, json) {
  target.replaceChildren(el("div", { class: `decision ${d.code || ""}`, "data-action": d.code || "", "data-request": d.request || "" },
    el("h3", { text: `${title}: ${d.label}` }),
    el("p", { text: `Disposition: ${d.cr.disposition || "-"}` }),
    d.preAuthRef ? el("p", { text: `Authorization number: ${d.preAuthRef}` }) : null,
    d.admin ? el("p", { class: "case", "data-case": d.admin.replace(/-\d+$/, ""), text: `Payer reference: ${d.admin}` }) : null,
    d.notes.length ? el("ul", {}, d.notes.map((n) => el("li", { text: n }))) : null,
    jsonToggle(json)));
}

async function ensureSubscription(orgNpi) {
  if (state.subscriptions.has(orgNpi)) return;
  state.box ||= sessionStorage.getItem("precert-demo-ehr-box") || uid();
  sessionStorage.setItem("precert-demo-ehr-box", state.box);
  const endpoint = `${location.origin}/demo-ehr/inbox/${state.box}`;
  const sub = { resourceType: "Subscription", status: "requested", reason: "Demo EHR: prior-authorization decisions for my organization",
    criteria: PAS_TOPIC, _criteria: { extension: [{ url: BACKPORT + "backport-filter-criteria", valueString: `org-identifier=${orgNpi}` }] },
    channel: { type: "rest-hook", endpoint, payload: "application/fhir+json",
      _payload: { extension: [{ url: BACKPORT + "backport-payload-content", valueCode: "full-resource" }] } } };
  const created = await call("Subscription create", "POST", "/fhir/Subscription", sub);
  state.subscriptions.set(orgNpi, created.id);
  $("#subscription-status").textContent = `Subscribed (Subscription/${created.id}) to decisions for NPI ${orgNpi}; notifications go to this EHR's inbox.`;
}

/** Submits the order as a PAS request, with the form's answers (``withForm``) or without any. */
async function submitPas(withForm = true) {
  try {
    const { role } = state.order;
    const orgNpi = get(get(`PractitionerRole/${role}`).organization.reference).identifier.find((i) => i.system === NPI).value;
    const clinician = get(`PractitionerRole/${role}`).practitioner;
    const qr = withForm ? readAnswers(state.form, { reference: clinician.reference }) : null;
    await ensureSubscription(orgNpi);
    const bundle = pasBundle(qr);
    state.request = bundle;
    state.response = null;
    $("#decision").replaceChildren();
    status("Submitting the prior authorization…");
    const response = await call("PAS Claim/$submit", "POST", "/fhir/Claim/$submit", bundle);
    state.response = decisionOf(response);
    $("#step-pas").hidden = false;
    showDecision($("#decision"), state.response, "Decision", response);
    $("#decision").prepend(el("p", {}, "Submitted: ", jsonToggle(bundle, "PAS Bundle JSON"),
      qr ? [" ", jsonToggle(qr, "QuestionnaireResponse JSON")] : " (without documentation)"));
    const missing = withForm ? state.form.missing.length : 0;
    status(`PAS: ${state.response.label}${missing ? ` (${missing} required answer(s) were left empty)` : ""}`, "ok");
    startPolling();
  } catch (err) {
    status(err.message, "bad");
  }
}

async function inquire() {
  try {
    const inquiry = structuredClone(state.request);
    inquiry.identifier = { system: `${location.origin}/demo-ehr/bundles`, value: uid() };
    const claim = inquiry.entry[0].resource;
    claim.id = `demo-${uid().slice(0, 8)}`;
    inquiry.entry[0].fullUrl = fullUrl(claim);
    if (state.response.admin) claim.item[0].extension = [{ url: EXT_ADMIN_REF, valueString: state.response.admin }];
    const answer = await call("PAS Claim/$inquire", "POST", "/fhir/Claim/$inquire", inquiry);
    const found = (answer.parameter || []).filter((p) => p.name === "return").map((p) => p.resource);
    if (!found.length) throw new Error("the inquiry found nothing");
    const d = decisionOf(found[0]);
    const box = el("div", { class: "inquiry" });
    showDecision(box, d, "Status ($inquire)", answer);
    $("#decision").append(box);
    status(`$inquire: ${d.label}`, "ok");
  } catch (err) {
    status(err.message, "bad");
  }
}

// ------------------------------------------------------------------ notifications (the inbox)
function startPolling() {
  if (state.polling) return;
  const poll = async () => {
    try {
      const res = await fetch(`/demo-ehr/inbox/${state.box}`, { headers: { Accept: "application/json" } });
      if (res.ok) showNotifications((await res.json()).notifications || []);
    } catch { /* the next poll tries again */ }
    state.polling = setTimeout(poll, 1500);
  };
  poll();
}

function showNotifications(bundles) {
  for (const b of bundles) {
    const params = b.entry?.[0]?.resource;
    const p = Object.fromEntries((params?.parameter || []).map((x) => [x.name, x]));
    const kind = p.type?.valueCode;
    const number = p["events-since-subscription-start"]?.valueString;
    const key = `${p.subscription?.valueReference?.reference}|${kind}|${number}|${b.id || b.timestamp}`;
    if (state.seen.has(key)) continue;
    state.seen.add(key);
    const focus = (b.entry || []).slice(1).map((e) => e.resource).find((r) => r?.resourceType === "Bundle");
    const li = el("li", { class: `notification ${kind}`, "data-type": kind },
      el("strong", { text: kind }), ` from ${p.subscription?.valueReference?.reference || "?"} `);
    if (focus) {
      const d = decisionOf(focus);
      const mine = Boolean(d.request) && d.request === state.request?.entry[0].resource.identifier[0].value;
      li.dataset.action = d.code || "";
      if (mine) li.classList.add("mine");
      li.append(`: ${d.label}${d.admin ? " (" + d.admin + ")" : ""}${mine ? " — this request" : ""}`);
      if (mine) {
        const box = el("div", { class: "notified" });
        showDecision(box, d, "Decision (notification)", b);
        $("#decision").append(box);
        status(`Notification: ${d.label}`, "ok");
      }
    }
    li.append(" ", jsonToggle(b));
    $("#notifications").append(li);
  }
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    const [records, list, discovery] = await Promise.all([
      fetch("/demo-ehr/records.json").then((r) => r.json()),
      call("Payer's prior-auth list", "GET", "/rules/prior-auth-list", undefined, { Accept: "application/json" }),
      call("CDS Hooks discovery", "GET", "/cds-services", undefined, { Accept: "application/json" }),
    ]);
    for (const r of records.resources) state.records.set(`${r.resourceType}/${r.id}`, r);
    state.services = discovery.services || [];
    fillPickers(list);
    $("#member").addEventListener("change", () => { state.touched = true; showMember(); });
    $("#category").addEventListener("change", onCategory);
    $("#select-order").addEventListener("click", () => runHook("order-select"));
    $("#sign-order").addEventListener("click", () => runHook("order-sign"));
    $("#open-dtr").addEventListener("click", openDtr);
    $("#submit-pas").addEventListener("click", () => submitPas(true));
    $("#submit-bare").addEventListener("click", () => submitPas(false));
    $("#inquire").addEventListener("click", inquire);
    status(`Ready: ${ofType("Patient").length} members, ${state.catalog.size} service categories.`, "ok");
    document.body.dataset.ready = "true";
  } catch (err) {
    status(err.message, "bad");
  }
}

start();
