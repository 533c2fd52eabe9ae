// Compiles every Precert DTR Library's CQL with the official CQL-to-ELM translator (@cqframework/cql)
// and writes the ELM JSON that the questionnaire packages serve, next to the CQL as library.elm.json.
//
//   node build-libraries.mjs           compile and write every library.elm.json
//   node build-libraries.mjs --check   compile, write nothing, exit 1 when a committed library.elm.json
//                                      differs or the translator reports a message not in
//                                      accepted-messages.json
//
// Either way a JSON report goes to stdout: per folder, whether the ELM matches the committed file and
// each translator message (severity, library, line, text) with whether it is accepted.
// The translator loads no model on its own: the System and FHIR 4.0.1 model info and FHIRHelpers come
// from ./cqframework (vendored, Apache-2.0).

import { createRequire } from "node:module";
import { readFileSync, readdirSync, existsSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

// kotlinx-io inside the translator calls require(); ES modules have none.
globalThis.require = createRequire(import.meta.url);
// The translator's logger prints to stdout, which carries the JSON report: send it to stderr.
const writeReport = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);

const {
  CqlCompilerOptions, CqlTranslator, LibraryManager, ModelManager,
  createLibrarySourceProvider, createModelInfoProvider, stringAsSource,
} = await import("@cqframework/cql/cql-to-elm");

const TOOLS = dirname(fileURLToPath(import.meta.url));
const ROOT = dirname(TOOLS);
const VENDOR = join(TOOLS, "cqframework");

const MODEL_INFO = {
  "System": join(VENDOR, "system-modelinfo.xml"),
  "FHIR@4.0.1": join(VENDOR, "fhir-modelinfo-4.0.1.xml"),
};

/** Every folder whose library.cql the packages serve, the shared library first. */
export function libraryFolders() {
  const forms = readdirSync(ROOT, { withFileTypes: true })
    .filter((d) => d.isDirectory() && d.name !== "common" && existsSync(join(ROOT, d.name, "library.cql")))
    .map((d) => d.name)
    .sort();
  return ["common", ...forms];
}

function librarySources() {
  const byName = new Map([["FHIRHelpers", join(VENDOR, "FHIRHelpers-4.0.1.cql")]]);
  for (const folder of libraryFolders()) {
    const path = join(ROOT, folder, "library.cql");
    const m = readFileSync(path, "utf8").match(/^\s*library\s+("?)([A-Za-z0-9_]+)\1/m);
    if (m) byName.set(m[2], path);
  }
  return byName;
}

function compiler() {
  const modelManager = new ModelManager();
  modelManager.modelInfoLoader.registerModelInfoProvider(
    createModelInfoProvider((id, _system, version) => {
      const path = MODEL_INFO[version && id !== "System" ? `${id}@${version}` : id];
      return path ? stringAsSource(readFileSync(path, "utf8")) : null;
    }),
  );
  const O = CqlCompilerOptions.Options;
  const options = new CqlCompilerOptions().withOptions([
    O.EnableLocators, O.DisableListDemotion, O.DisableListPromotion,
  ]);
  const libraryManager = new LibraryManager(modelManager, options);
  const sources = librarySources();
  libraryManager.librarySourceLoader.registerProvider(
    createLibrarySourceProvider((name) => (sources.has(name) ? stringAsSource(readFileSync(sources.get(name), "utf8")) : null)),
  );
  return libraryManager;
}

function message(e, folder) {
  // TrackBack exposes no typed accessors in the JS build; its toString carries the position.
  const line = e.locator ? String(e.locator).match(/startLine=(\d+)/) : null;
  return {
    severity: e.severity.name,
    folder,
    line: line ? Number(line[1]) : null,
    text: String(e.message),
  };
}

function loadAccepted() {
  const path = join(TOOLS, "accepted-messages.json");
  return existsSync(path) ? JSON.parse(readFileSync(path, "utf8")).accepted : [];
}

function isAccepted(msg, accepted) {
  return accepted.some((a) => a.folder === msg.folder && a.severity === msg.severity && msg.text.includes(a.text));
}

export function build({ write }) {
  const accepted = loadAccepted();
  const report = { ok: true, libraries: {} };
  for (const folder of libraryFolders()) {
    // A fresh manager per library: no compiled include leaks state from one library into the next.
    const translator = CqlTranslator.fromText(readFileSync(join(ROOT, folder, "library.cql"), "utf8"), compiler());
    // Kotlin lists: toArray() gives a JS array. `exceptions` holds every message, errors included.
    const messages = [];
    for (const e of translator.exceptions.toArray()) {
      const m = message(e, folder);
      if (m.severity === "Info") continue;
      m.accepted = m.severity !== "Error" && isAccepted(m, accepted);
      messages.push(m);
    }
    const hasError = translator.errors.toArray().length > 0;
    const elm = hasError ? null : JSON.stringify(JSON.parse(translator.toJson()), null, 1) + "\n";
    const path = join(ROOT, folder, "library.elm.json");
    const committed = existsSync(path) ? readFileSync(path, "utf8") : null;
    const matches = elm !== null && committed === elm;
    if (write && elm !== null && !matches) writeFileSync(path, elm);
    report.libraries[folder] = { elm_matches: matches, written: write && elm !== null && !matches, messages };
    if (hasError || messages.some((m) => !m.accepted) || (!write && !matches)) report.ok = false;
  }
  return report;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const check = process.argv.includes("--check");
  const report = build({ write: !check });
  writeReport(JSON.stringify(report, null, 1) + "\n", () => process.exit(report.ok ? 0 : 1));
}
