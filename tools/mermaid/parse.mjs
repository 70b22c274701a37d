// Parse Mermaid diagrams with Mermaid's own parser, offline: `node parse.mjs FILE...`.
// Prints "ok FILE TYPE" or "FAIL FILE: error" per file; exits 1 if any failed.
// mermaid.parse() needs no layout and no browser, only a DOM for its sanitiser: jsdom gives one.
import { readFileSync } from 'node:fs';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false });

let failed = 0;
for (const file of process.argv.slice(2)) {
  try {
    const parsed = await mermaid.parse(readFileSync(file, 'utf8'));
    console.log(`ok ${file} ${parsed.diagramType}`);
  } catch (err) {
    failed += 1;
    console.log(`FAIL ${file}: ${String(err.message ?? err).replace(/\n/g, ' | ')}`);
  }
}
process.exit(failed ? 1 : 0);
