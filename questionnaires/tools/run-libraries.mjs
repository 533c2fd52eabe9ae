// Runs Library ELM the way a DTR client does (see cql-engine.mjs, which the demo EHR runs in the browser).
//
// stdin:  {"libraries": [ELM JSON, ...],           every library of the package, includes too
//          "run": ["HomeOxygen", ...],             the libraries to execute
//          "valuesets": [ValueSet, ...],           expanded (expansion.contains) or enumerated (compose)
//          "patients": [Bundle, ...]}              one collection Bundle per patient, Patient first
// stdout: {"HomeOxygen": {"<patient id>": {"<define>": value, ...}, ...}, ...}
// A value is JSON: FHIR resources and elements as their JSON, CQL Codes as Codings, dates and
// date-times as ISO strings, lists as arrays.

import { runLibrary } from "./cql-engine.mjs";

function readStdin() {
  return new Promise((resolve, reject) => {
    const chunks = [];
    process.stdin.on("data", (c) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}

const input = JSON.parse(await readStdin());
const out = {};
for (const name of input.run) {
  out[name] = await runLibrary(input.libraries, name, input.valuesets, input.patients);
}
process.stdout.write(JSON.stringify(out));
