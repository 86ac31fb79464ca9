// Token ids and decoded text from transformers.js (@lenml/tokenizers 3.7.2), the reference that
// tests/unit/test_hf_tokenizer.cpp compares qkd-train's tokenizer.json implementation with.
//   node reference_encode.mjs <@lenml/tokenizers dir> <dir with tokenizer.json + tokenizer_config.json> <texts.jsonl>
// Each input line is one JSON string, or an array of bytes that are read as UTF-8 the way TextDecoder
// reads them (U+FFFD for each ill-formed part, a leading BOM kept). Each output line, in the same order:
//   {"with": ids, "without": ids, "decoded": text, "decoded_skip": text, "is_nfc": bool}
// "with" is tokenizer.encode(text) (add_special_tokens defaults to true, as transformers'
// tokenizer(text)["input_ids"]), "without" the same with add_special_tokens false, "decoded" the decode
// of "without" and "decoded_skip" the decode of "with" skipping special tokens (both without
// clean_up_tokenization_spaces), "is_nfc" whether the text is in Unicode normal form C.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [libraryDir, modelsDir, textsPath] = process.argv.slice(2);
if (!textsPath) {
  console.error("usage: node reference_encode.mjs <@lenml/tokenizers dir> <models dir> <texts.jsonl>");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const { TokenizerLoader } = require(path.resolve(libraryDir));
const readJson = (name) => JSON.parse(fs.readFileSync(path.join(modelsDir, name), "utf8"));
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: readJson("tokenizer.json"),
  tokenizerConfig: readJson("tokenizer_config.json"),
});

const plain = { skip_special_tokens: false, clean_up_tokenization_spaces: false };
const skipping = { skip_special_tokens: true, clean_up_tokenization_spaces: false };
// transformers.js refuses to decode an empty list; its text is "".
const decode = (ids, options) => (ids.length === 0 ? "" : tokenizer.decode(ids, options));
const lines = fs.readFileSync(textsPath, "utf8").split("\n").filter((line) => line.length > 0);
const out = [];
for (const line of lines) {
  const parsed = JSON.parse(line);
  const text = typeof parsed === "string" ? parsed : new TextDecoder("utf-8", { ignoreBOM: true }).decode(Uint8Array.from(parsed));
  const withSpecial = tokenizer.encode(text);
  const without = tokenizer.encode(text, { add_special_tokens: false });
  out.push(
    JSON.stringify({
      with: withSpecial,
      without,
      decoded: decode(without, plain),
      decoded_skip: decode(withSpecial, skipping),
      is_nfc: text === text.normalize("NFC"),
    })
  );
}
process.stdout.write(out.join("\n") + "\n");
