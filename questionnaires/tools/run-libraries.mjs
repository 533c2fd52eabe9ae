// Runs Library ELM the way a DTR client does: cql-execution with cql-exec-fhir as the FHIR 4.0.1 data
// source and a code service built from the ValueSets the questionnaire package ships.
//
// stdin:  {"libraries": [ELM JSON, ...],           every library of the package, includes too
//          "run": ["HomeOxygen", ...],             the libraries to execute
//          "valuesets": [ValueSet, ...],           expanded (expansion.contains) or enumerated (compose)
//          "patients": [Bundle, ...]}              one collection Bundle per patient, Patient first
// stdout: {"HomeOxygen": {"<patient id>": {"<define>": value, ...}, ...}, ...}
// A value is JSON: FHIR resources and elements as their JSON, CQL Codes as Codings, dates and
// date-times as ISO strings, lists as arrays.

import cql from "cql-execution";
import cqlfhir from "cql-exec-fhir";

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

function codeService(valuesets) {
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

function toJson(value) {
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

const input = JSON.parse(await readStdin());
const byName = Object.fromEntries(input.libraries.map((elm) => [elm.library.identifier.id, elm]));
const out = {};
for (const name of input.run) {
  const repository = new cql.Repository(byName);
  const library = repository.resolve(name, byName[name].library.identifier.version);
  const executor = new cql.Executor(library, codeService(input.valuesets));
  const patients = cqlfhir.PatientSource.FHIRv401();
  patients.loadBundles(input.patients);
  const results = await executor.exec(patients);
  out[name] = {};
  for (const [pid, defines] of Object.entries(results.patientResults)) {
    out[name][pid] = Object.fromEntries(Object.entries(defines).filter(([k]) => k !== "Patient").map(([k, v]) => [k, toJson(v)]));
  }
}
process.stdout.write(JSON.stringify(out));
