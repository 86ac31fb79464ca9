#!/usr/bin/env node
// Loads a GGUF with llama.cpp (node-llama-cpp's prebuilt CPU binaries), tokenizes texts and evaluates
// next-token log-probabilities, and prints one JSON object on stdout.
//
//   node scripts/llama_cpp/compare.mjs MODEL.gguf REQUEST.json
//
// REQUEST.json: {"tokenize": ["text", ...], "evaluate": [[token ids], ...], "vocab_size": 4096,
//                "context_size": 512 (default: the longest sequence), "kv_cache_type": "F16" (llama.cpp's default)}
// Output:       {"node_llama_cpp": VERSION, "tokenize": [[ids], ...],
//                "evaluate": [{"logprobs": [...], "argmax": [...]}, ...]}
// where logprobs[i] = log p(ids[i + 1] | ids[0..i]) and argmax[i] the most likely token after ids[0..i]
// (llama.cpp's raw logits through a full softmax: greedy sampling, no top-k/top-p/temperature).
//
// node-llama-cpp is found through NODE_LLAMA_CPP_DIR (the folder holding node_modules/node-llama-cpp),
// else $HOME/.cache/qkd-train/node-llama-cpp (scripts/bootstrap.sh test installs it there).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

function die(message) {
  process.stderr.write(`compare.mjs: ${message}\n`);
  process.exit(1);
}

const [modelPath, requestPath] = process.argv.slice(2);
if (!modelPath || !requestPath) die("usage: node compare.mjs MODEL.gguf REQUEST.json");

const root = process.env.NODE_LLAMA_CPP_DIR || path.join(os.homedir(), ".cache", "qkd-train", "node-llama-cpp");
const packageDir = path.join(root, "node_modules", "node-llama-cpp");
if (!fs.existsSync(path.join(packageDir, "package.json")))
  die(`node-llama-cpp not found in ${root} (set NODE_LLAMA_CPP_DIR, or run: bash scripts/bootstrap.sh test)`);
const version = JSON.parse(fs.readFileSync(path.join(packageDir, "package.json"), "utf8")).version;
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(path.join(packageDir, "dist", "index.js")).href);

const request = JSON.parse(fs.readFileSync(requestPath, "utf8"));
// CPU only, prebuilt binaries only: never compile or download anything here.
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, progressLogs: false });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });

const result = { node_llama_cpp: version, node: process.version, tokenize: [], evaluate: [] };
for (const text of request.tokenize ?? []) result.tokenize.push(Array.from(model.tokenize(text, false)));

const evaluate = request.evaluate ?? [];
if (evaluate.length > 0) {
  const longest = Math.max(...evaluate.map((ids) => ids.length));
  const contextSize = request.context_size ?? Math.max(longest, 16);
  const kvType = request.kv_cache_type ?? "F16";
  const context = await model.createContext({
    contextSize, batchSize: contextSize, sequences: 1,
    experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
  });
  const sequence = context.getSequence();
  result.kv_cache_type = [context.kvCacheKeyType, context.kvCacheValueType];
  for (const ids of evaluate) {
    await sequence.clearHistory();
    const input = ids.map((id, i) => (i + 1 < ids.length ? [id, { generateNext: { probabilities: true } }] : id));
    const output = await sequence.controlledEvaluate(input);
    const logprobs = [], argmax = [];
    for (let i = 0; i + 1 < ids.length; ++i) {
      const probabilities = output[i]?.next?.probabilities;
      if (!probabilities) die(`no probabilities at position ${i}`);
      if (request.vocab_size && probabilities.size !== request.vocab_size)
        die(`position ${i}: ${probabilities.size} probabilities, expected the whole vocabulary (${request.vocab_size})`);
      const p = probabilities.get(ids[i + 1]) ?? 0;
      logprobs.push(p > 0 ? Math.log(p) : -1e30);
      argmax.push(probabilities.keys().next().value);  // the map is sorted, most likely first
    }
    result.evaluate.push({ logprobs, argmax });
  }
  await context.dispose();
}
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(result) + "\n");
