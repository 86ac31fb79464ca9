#!/usr/bin/env node
// The peer of `qkd-train tokenize` in scripts/bench/tokenize_throughput.py: transformers.js
// (@lenml/tokenizers, what the tokenizer tests compare with) encoding every record of a text JSONL
// with add_special_tokens (transformers' tokenizer(text)["input_ids"]), one thread, as node runs it.
//   node tokenize_node.mjs <@lenml/tokenizers dir> <dir with tokenizer.json + tokenizer_config.json> <texts.jsonl>
// Prints {"records": n, "tokens": n, "seconds": encode time, "load_seconds": s}.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [libraryDir, modelsDir, textsPath] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { TokenizerLoader } = require(path.resolve(libraryDir));
const readJson = (name) => JSON.parse(fs.readFileSync(path.join(modelsDir, name), "utf8"));
const loadStart = performance.now();
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: readJson("tokenizer.json"),
  tokenizerConfig: readJson("tokenizer_config.json"),
});
const loadSeconds = (performance.now() - loadStart) / 1000;
const texts = fs.readFileSync(textsPath, "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l).text);
const start = performance.now();
let tokens = 0;
for (const text of texts) tokens += tokenizer.encode(text).length;
const seconds = (performance.now() - start) / 1000;
process.stdout.write(JSON.stringify({ records: texts.length, tokens, seconds, load_seconds: loadSeconds }) + "\n");
