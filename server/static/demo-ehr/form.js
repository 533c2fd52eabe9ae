// The DTR form: a Questionnaire rendered as HTML controls, pre-filled the SDC way (each item's
// initialExpression names a define of the package's CQL, already computed by cql-execution), with
// enableWhen applied as the clinician edits, and read back as a DTR QuestionnaireResponse whose answers
// say where they came from (information-origin: auto, override or manual).
//
// Item types supported: the ones the Precert forms use (group, string, text, date, decimal, integer,
// boolean, choice with answerOption or answerValueSet, single or repeating); readOnly items are shown,
// not answered.

const EXT_INITIAL = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression";
const EXT_CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression";
const EXT_MIN = "http://hl7.org/fhir/StructureDefinition/minValue";
const EXT_MAX = "http://hl7.org/fhir/StructureDefinition/maxValue";
const EXT_UNIT = "http://hl7.org/fhir/StructureDefinition/questionnaire-unit";
const EXT_ORIGIN = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/information-origin";
const DTR_QR = "http://hl7.org/fhir/us/davinci-dtr/StructureDefinition/dtr-questionnaireresponse";

/** A DOM element with attributes (class, text, data-*, properties) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

const extOf = (item, url) => (item.extension || []).find((e) => e.url === url);
const numberOf = (e) => (e ? e.valueDecimal ?? e.valueInteger : undefined);

function options(item, valuesets) {
  if (item.answerOption) return item.answerOption.map((o) => o.valueCoding).filter(Boolean);
  if (!item.answerValueSet) return [];
  const url = item.answerValueSet.split("|")[0];
  const vs = valuesets.find((v) => v.url === url);
  if (!vs) return [];
  if (vs.expansion?.contains) return vs.expansion.contains.map((c) => ({ system: c.system, code: c.code, display: c.display }));
  return (vs.compose?.include || []).flatMap((inc) => (inc.concept || []).map((c) => ({ system: inc.system, code: c.code, display: c.display || c.code })));
}

/** The CQL define an initialExpression names: '"HomeOxygen".LatestSpO2Percent' -> LatestSpO2Percent. */
function defineOf(item) {
  const expr = extOf(item, EXT_INITIAL)?.valueExpression;
  if (!expr || expr.language !== "text/cql" || !expr.expression) return null;
  const m = expr.expression.match(/^(?:"[^"]+"|\w+)\.(?:"([^"]+)"|(\w+))$/);
  return m ? m[1] || m[2] : null;
}

/** CQL results (JSON from cql-engine.mjs) as answer values for an item's type; [] when empty. */
function valuesFromCql(item, value, opts) {
  if (value === null || value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  const out = [];
  for (const v of list) {
    if (v === null || v === undefined) continue;
    switch (item.type) {
      case "choice": {
        const coding = typeof v === "object" ? v : { code: String(v) };
        const match = opts.find((o) => o.code === coding.code && (!coding.system || !o.system || o.system === coding.system));
        if (match) out.push(match);
        break;
      }
      case "date": out.push(String(v).slice(0, 10)); break;
      case "boolean": out.push(Boolean(v)); break;
      case "decimal": case "integer": if (typeof v === "number") out.push(v); break;
      default: out.push(typeof v === "object" ? (v.display || v.code || JSON.stringify(v)) : String(v));
    }
  }
  return item.repeats ? out : out.slice(0, 1);
}

function valueFromAnswer(item, answer) {
  const key = Object.keys(answer).find((k) => k.startsWith("value"));
  return key ? answer[key] : undefined;
}

/** Renders ``questionnaire`` into ``container``. Returns the form handle readAnswers() reads. */
export function renderForm(container, questionnaire, { valuesets = [], started = null, defines = {} } = {}) {
  const fields = new Map(); // linkId -> {item, get(), set(values), origin, prefilled, wrapper}
  const startedAnswers = new Map();
  (function collect(items) {
    for (const it of items || []) {
      if (it.answer) startedAnswers.set(it.linkId, it.answer);
      collect(it.item);
    }
  })(started?.item);

  function control(item) {
    const name = item.linkId;
    const opts = item.type === "choice" ? options(item, valuesets) : [];
    const readOnly = Boolean(item.readOnly);
    let get, set, inputs;
    if (item.type === "boolean") {
      inputs = [true, false].map((v) => el("input", { type: "radio", name, value: String(v), disabled: readOnly }));
      const node = el("span", { class: "radios" }, inputs.map((i, n) => el("label", {}, i, n === 0 ? " Yes" : " No")));
      get = () => { const c = inputs.find((i) => i.checked); return c ? [c.value === "true"] : []; };
      set = (vals) => { for (const i of inputs) i.checked = vals.length > 0 && String(vals[0]) === i.value; };
      return { node, get, set, inputs };
    }
    if (item.type === "choice" && item.repeats) {
      inputs = opts.map((o) => el("input", { type: "checkbox", name, value: o.code, disabled: readOnly }));
      const node = el("span", { class: "checks" }, inputs.map((i, n) => el("label", {}, i, ` ${opts[n].display || opts[n].code}`)));
      get = () => inputs.map((i, n) => (i.checked ? opts[n] : null)).filter(Boolean);
      set = (vals) => { for (const [n, i] of inputs.entries()) i.checked = vals.some((v) => v.code === opts[n].code); };
      return { node, get, set, inputs };
    }
    if (item.type === "choice") {
      const select = el("select", { name, disabled: readOnly }, el("option", { value: "", text: "—" }),
        opts.map((o) => el("option", { value: o.code, text: o.display || o.code })));
      get = () => { const o = opts.find((x) => x.code === select.value); return o ? [o] : []; };
      set = (vals) => { select.value = vals[0]?.code || ""; };
      return { node: select, get, set, inputs: [select] };
    }
    const kinds = { string: "text", date: "date", decimal: "number", integer: "number" };
    const input = item.type === "text"
      ? el("textarea", { name, rows: 3, disabled: readOnly })
      : el("input", { name, type: kinds[item.type] || "text", disabled: readOnly });
    if (item.type === "decimal") input.step = "any";
    if (item.type === "integer") input.step = "1";
    const min = numberOf(extOf(item, EXT_MIN));
    const max = numberOf(extOf(item, EXT_MAX));
    if (min !== undefined) input.min = String(min);
    if (max !== undefined) input.max = String(max);
    get = () => {
      const raw = input.value.trim();
      if (!raw) return [];
      if (item.type === "decimal") return Number.isFinite(Number(raw)) ? [Number(raw)] : [];
      if (item.type === "integer") return Number.isInteger(Number(raw)) ? [Number(raw)] : [];
      return [raw];
    };
    set = (vals) => { input.value = vals.length ? String(vals[0]) : ""; };
    const unit = extOf(item, EXT_UNIT)?.valueCoding;
    const node = unit ? el("span", {}, input, el("span", { class: "unit", text: ` ${unit.display || unit.code}` })) : input;
    return { node, get, set, inputs: [input] };
  }

  function render(item) {
    if (item.type === "group" || item.type === "display") {
      const box = el("fieldset", { class: "group", "data-link-id": item.linkId }, el("legend", { text: item.text }));
      if (item.type === "display") box.append(el("p", { text: item.text }));
      for (const child of item.item || []) box.append(render(child));
      fields.set(item.linkId, { item, wrapper: box, group: true });
      return box;
    }
    const c = control(item);
    const flag = el("span", { class: "origin" });
    const wrapper = el("div", { class: "field", "data-link-id": item.linkId, "data-type": item.type },
      el("label", { class: "question", text: item.text + (item.required ? " *" : "") }), " ", c.node, " ", flag);
    const field = { item, wrapper, flag, ...c, origin: null, prefilled: null };
    // Pre-fill: answers Precert filled in the package's QuestionnaireResponse, then the CQL results.
    const define = defineOf(item);
    const opts = item.type === "choice" ? options(item, valuesets) : [];
    let values = [];
    if (startedAnswers.has(item.linkId)) values = startedAnswers.get(item.linkId).map((a) => valueFromAnswer(item, a)).filter((v) => v !== undefined);
    else if (define && define in defines) values = valuesFromCql(item, defines[define], opts);
    if (define) wrapper.dataset.define = define;
    if (extOf(item, EXT_CALCULATED)) flag.textContent = "(calculated by the payer's rules)";
    if (values.length) {
      c.set(values);
      field.origin = "auto";
      field.prefilled = JSON.stringify(c.get());
      wrapper.classList.add("prefilled");
      wrapper.dataset.origin = "auto";
      flag.textContent = startedAnswers.has(item.linkId) ? "pre-filled by the payer" : `pre-filled from the chart (${define})`;
    }
    const changed = () => {
      const now = JSON.stringify(c.get());
      field.origin = field.prefilled === null ? (now === "[]" ? null : "manual") : now === field.prefilled ? "auto" : "override";
      wrapper.dataset.origin = field.origin || "";
      wrapper.classList.toggle("prefilled", field.origin === "auto");
      if (field.prefilled !== null) flag.textContent = field.origin === "auto" ? "pre-filled" : "changed by the clinician";
      applyEnableWhen();
    };
    for (const i of c.inputs) i.addEventListener("input", changed), i.addEventListener("change", changed);
    fields.set(item.linkId, field);
    return wrapper;
  }

  function answered(linkId) {
    const f = fields.get(linkId);
    return f && !f.group && !f.wrapper.hidden ? f.get() : [];
  }

  function conditionHolds(cond) {
    const values = answered(cond.question);
    if (cond.operator === "exists") return (values.length > 0) === Boolean(cond.answerBoolean);
    const key = Object.keys(cond).find((k) => k.startsWith("answer"));
    const want = cond[key];
    return values.some((v) => {
      if (key === "answerCoding") return (v.code === want.code && (!want.system || v.system === want.system)) === (cond.operator === "=");
      switch (cond.operator) {
        case "=": return v === want;
        case "!=": return v !== want;
        case ">": return v > want;
        case "<": return v < want;
        case ">=": return v >= want;
        case "<=": return v <= want;
        default: return false;
      }
    });
  }

  function applyEnableWhen() {
    // Repeated until stable: an item hidden may disable another that depends on it.
    for (let pass = 0; pass < 5; pass++) {
      let changed = false;
      for (const f of fields.values()) {
        const conds = f.item.enableWhen;
        if (!conds?.length) continue;
        const results = conds.map(conditionHolds);
        const enabled = f.item.enableBehavior === "any" ? results.some(Boolean) : results.every(Boolean);
        if (f.wrapper.hidden === enabled) { f.wrapper.hidden = !enabled; changed = true; }
      }
      if (!changed) break;
    }
  }

  container.replaceChildren(el("h3", { text: questionnaire.title || questionnaire.name }),
    ...(questionnaire.item || []).map((i) => render(i)));
  applyEnableWhen();
  return {
    questionnaire, fields, started,
    prefilledCount: () => [...fields.values()].filter((f) => f.origin === "auto").length,
  };
}

function visible(field) {
  let node = field.wrapper;
  while (node) { if (node.hidden) return false; node = node.parentElement; }
  return true;
}

function answerValue(type, v) {
  switch (type) {
    case "choice": return { valueCoding: v };
    case "boolean": return { valueBoolean: v };
    case "date": return { valueDate: v };
    case "decimal": return { valueDecimal: v };
    case "integer": return { valueInteger: v };
    default: return { valueString: v };
  }
}

/** The DTR QuestionnaireResponse of the form as it stands (completed; enabled answers only). The
 * required questions left unanswered are marked, and listed in ``form.missing``. ``author`` (a
 * Reference to the ordering clinician) is named on the answers they typed or changed. */
export function readAnswers(form, author = null) {
  const { questionnaire, fields, started } = form;
  const missing = [];
  function items(list) {
    const out = [];
    for (const item of list || []) {
      const f = fields.get(item.linkId);
      if (!f || !visible(f)) continue;
      if (f.group) {
        const children = items(item.item);
        if (children.length) out.push({ linkId: item.linkId, text: item.text, item: children });
        continue;
      }
      const values = f.item.readOnly ? [] : f.get();
      if (!values.length) {
        if (item.required && !item.readOnly) missing.push(item.linkId);
        continue;
      }
      const origin = f.origin || "manual";
      // DTR (dtrx-1): an answer the clinician typed or changed names who did it; a pre-filled one does not.
      const who = origin !== "auto" && author ? [{ url: "author", extension: [{ url: "practitioner", valueReference: author }] }] : [];
      out.push({ linkId: item.linkId, text: item.text, answer: values.map((v) => ({
        extension: [{ url: EXT_ORIGIN, extension: [{ url: "source", valueCode: origin }, ...who] }], ...answerValue(item.type, v) })) });
    }
    return out;
  }
  const item = items(questionnaire.item);
  for (const f of fields.values()) if (!f.group) f.wrapper.classList.toggle("missing", missing.includes(f.item.linkId));
  form.missing = missing;
  return {
    resourceType: "QuestionnaireResponse", id: started?.id || crypto.randomUUID(),
    meta: { profile: [DTR_QR] },
    ...(started?.extension ? { extension: started.extension } : {}),
    questionnaire: `${questionnaire.url}|${questionnaire.version}`,
    status: "completed", subject: started?.subject, authored: new Date().toISOString(), item,
  };
}
