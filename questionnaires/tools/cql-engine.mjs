// Runs Library ELM the way a DTR client does: cql-execution with cql-exec-fhir as the FHIR 4.0.1 data
// source and a code service built from the ValueSets the questionnaire package ships. Shared by the
// node runner the tests use (run-libraries.mjs) and the demo EHR in the browser (bundled by
// build-demo-bundle.mjs), so both compute pre-filled answers with the same code.

import cql from "cql-execution";
import cqlfhir from "cql-exec-fhir";

/** A cql-execution CodeService over ValueSets, expanded (expansion.contains) or enumerated (compose). */
export function codeService(valuesets) {
  const byUrl = {};
  for (const vs of valuesets) {
    const codes = vs.expansion?.contains
      ? vs.expansion.contains.map((c) => ({ code: c.code, system: c.system, version: c.version }))
      : (vs.compose?.include ?? []).flatMap((inc) => (inc.concept ?? []).map((c) => ({ code: c.code, system: inc.system, version: inc.version })));
    byUrl[vs.url] ??= {};
    byUrl[vs.url][vs.version ?? ""] = codes;
  }
  return new cql.CodeService(byUrl);
}

/** A CQL result as JSON: FHIR resources and elements as their JSON, CQL Codes as Codings, dates and
 * date-times as ISO strings, lists as arrays. */
export function toJson(value) {
  if (value === null || value === undefined) return null;
  if (Array.isArray(value)) return value.map(toJson);
  if (value._json !== undefined) return value._json; // cql-exec-fhir FHIRObject
  if (value.isCode) return { system: value.system, code: value.code, ...(value.display ? { display: value.display } : {}) };
  if (value.isDate || value.isDateTime || value.isTime) return value.toString();
  if (value.isQuantity) return { value: value.value, unit: value.unit };
  if (typeof value === "object" && value.constructor === Object) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJson(v)]));
  }
  if (typeof value === "object" && typeof value.toString === "function") return value.toString();
  return value;
}

/** Executes library ``name`` (its includes among ``libraries``, ELM JSON) against collection Bundles,
 * one per patient with the Patient first. Returns {"<patient id>": {"<define>": JSON value}}. */
export async function runLibrary(libraries, name, valuesets, patientBundles) {
  const byName = Object.fromEntries(libraries.map((elm) => [elm.library.identifier.id, elm]));
  if (!byName[name]) throw new Error(`no library named ${name}`);
  const repository = new cql.Repository(byName);
  const library = repository.resolve(name, byName[name].library.identifier.version);
  const executor = new cql.Executor(library, codeService(valuesets));
  const patients = cqlfhir.PatientSource.FHIRv401();
  patients.loadBundles(patientBundles);
  const results = await executor.exec(patients);
  const out = {};
  for (const [pid, defines] of Object.entries(results.patientResults)) {
    out[pid] = Object.fromEntries(Object.entries(defines).filter(([k]) => k !== "Patient").map(([k, v]) => [k, toJson(v)]));
  }
  return out;
}
