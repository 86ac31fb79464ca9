#include "qkd/eval/mc_formats.h"

#include <algorithm>
#include <cctype>

#include "qkd/common/error.h"
#include "qkd/eval/jsonl_lines.h"

namespace qkd::eval {

namespace {

using nlohmann::json;

const json& require_field(const json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end()) fail(where, std::string("missing field \"") + key + "\"");
  return *it;
}

std::vector<std::string> require_string_list(const json& value, const char* key, const std::string& where) {
  if (!value.is_array() || value.empty()) fail(where, std::string("field \"") + key + "\" must be a non-empty list");
  std::vector<std::string> out;
  for (const auto& v : value) {
    if (!v.is_string()) fail(where, std::string("field \"") + key + "\" must hold strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

// Labels come as integers, numeric strings (hellaswag exports) or booleans (boolq).
int64_t require_index(const json& record, const char* key, const std::string& where) {
  const auto& v = require_field(record, key, where);
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (!s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); })) {
      return std::stoll(s);
    }
  }
  fail(where, std::string("field \"") + key + "\" is not an integer label");
}

void check_label(int64_t label, size_t choices, const std::string& where) {
  if (label < 0 || label >= static_cast<int64_t>(choices)) {
    fail(where, "label " + std::to_string(label) + " out of range for " + std::to_string(choices) + " choices");
  }
}

// Python's str.strip() for ASCII whitespace.
std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const auto first = s.find_first_not_of(ws);
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(ws) - first + 1);
}

// Python's str.replace: every non-overlapping occurrence, left to right, in one pass.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos).append(to);
  }
  return out.append(s, pos, std::string::npos);
}

// re.sub(r"\[.*?\]", "", s): '.' does not cross a newline, so a '[' without a ']' on its line stays.
std::string remove_bracketed(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') {
      const auto close = s.find_first_of("]\n", i + 1);
      if (close != std::string::npos && s[close] == ']') {
        i = close;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// Python's str.capitalize() (ASCII letters only; other bytes are kept as they are).
std::string capitalize(const std::string& s) {
  std::string out = s;
  for (size_t i = 0; i < out.size(); ++i) {
    const auto c = static_cast<unsigned char>(out[i]);
    if (c < 0x80) out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
  }
  return out;
}

// The usual lm-eval shape: one context, continuation = " " + choice, normalised by the bare choice.
McItem shared_context_item(const std::string& context, const std::vector<std::string>& choices, int64_t label,
                           const std::string& where) {
  check_label(label, choices.size(), where);
  McItem item;
  item.label = label;
  for (const auto& c : choices) item.choices.push_back({context, " " + c, static_cast<int64_t>(c.size())});
  return item;
}

McItem generic_item(const json& r, const std::string& where) {
  const auto& context = require_string(r, "context", where);
  const auto choices = require_string_list(require_field(r, "choices", where), "choices", where);
  const int64_t label = require_index(r, "label", where);
  check_label(label, choices.size(), where);
  McItem item;
  item.label = label;
  // Choices are used exactly as written (kjv-cloze choices carry their own leading space).
  for (const auto& c : choices) item.choices.push_back({context, c, static_cast<int64_t>(c.size())});
  return item;
}

McItem hellaswag_item(const json& r, const std::string& where) {
  const auto& activity = require_string(r, "activity_label", where);
  std::string ctx;
  if (r.contains("ctx_a")) {
    ctx = require_string(r, "ctx_a", where) + " " + capitalize(require_string(r, "ctx_b", where));
  } else {
    ctx = require_string(r, "ctx", where);
  }
  auto endings = require_string_list(require_field(r, "endings", where), "endings", where);
  for (auto& e : endings) e = hellaswag_preprocess(e);
  return shared_context_item(hellaswag_preprocess(activity + ": " + ctx), endings, require_index(r, "label", where),
                             where);
}

McItem piqa_item(const json& r, const std::string& where) {
  const auto context = "Question: " + require_string(r, "goal", where) + "\nAnswer:";
  const std::vector<std::string> choices{require_string(r, "sol1", where), require_string(r, "sol2", where)};
  return shared_context_item(context, choices, require_index(r, "label", where), where);
}

// ARC and OpenBookQA: choices {"text": [...], "label": [...]}, answer = position of answerKey in labels.
McItem lettered_choices_item(const json& r, const std::string& context, const std::string& where) {
  const auto& choices = require_field(r, "choices", where);
  if (!choices.is_object()) fail(where, "field \"choices\" must be an object with \"text\" and \"label\"");
  const auto texts = require_string_list(require_field(choices, "text", where), "choices.text", where);
  const auto labels = require_string_list(require_field(choices, "label", where), "choices.label", where);
  if (labels.size() != texts.size()) fail(where, "choices.text and choices.label differ in length");
  const auto& key = require_string(r, "answerKey", where);
  const auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end()) fail(where, "answerKey \"" + key + "\" is not among the choice labels");
  return shared_context_item(context, texts, it - labels.begin(), where);
}

McItem arc_item(const json& r, const std::string& where) {
  return lettered_choices_item(r, "Question: " + require_string(r, "question", where) + "\nAnswer:", where);
}

McItem openbookqa_item(const json& r, const std::string& where) {
  return lettered_choices_item(r, require_string(r, "question_stem", where), where);
}

// lm-eval's partial evaluation: the option completes the context, and the shared rest of the
// sentence is the scored continuation.
McItem winogrande_item(const json& r, const std::string& where) {
  const auto& sentence = require_string(r, "sentence", where);
  const auto blank = sentence.find('_');
  if (blank == std::string::npos) fail(where, "sentence has no \"_\" blank");
  const int64_t answer = require_index(r, "answer", where);
  if (answer < 1 || answer > 2) fail(where, "answer " + std::to_string(answer) + " is not 1 or 2");
  const std::string continuation = " " + strip(sentence.substr(blank + 1));
  McItem item;
  item.label = answer - 1;
  for (const char* key : {"option1", "option2"}) {
    const std::string context = sentence.substr(0, blank) + require_string(r, key, where);
    item.choices.push_back({context, continuation, static_cast<int64_t>(context.size())});
  }
  return item;
}

McItem boolq_item(const json& r, const std::string& where) {
  const auto context =
      require_string(r, "passage", where) + "\nQuestion: " + require_string(r, "question", where) + "?\nAnswer:";
  // super_glue exports carry "label" (0/1), the original boolq "answer" (bool).
  const int64_t label = require_index(r, r.contains("label") ? "label" : "answer", where);
  return shared_context_item(context, {"no", "yes"}, label, where);
}

}  // namespace

const EnumTable<McFormat>& mc_formats() {
  static const EnumTable<McFormat> table{{{McFormat::automatic, "auto"},
                                          {McFormat::generic, "generic"},
                                          {McFormat::hellaswag, "hellaswag"},
                                          {McFormat::piqa, "piqa"},
                                          {McFormat::arc, "arc"},
                                          {McFormat::winogrande, "winogrande"},
                                          {McFormat::boolq, "boolq"},
                                          {McFormat::openbookqa, "openbookqa"}},
                                         {{McFormat::generic, "mc"},
                                          {McFormat::arc, "arc_easy"},
                                          {McFormat::arc, "arc_challenge"}}};
  return table;
}

McFormat parse_mc_format(const std::string& name) {
  if (const auto format = mc_formats().find(name)) return *format;
  fail("format", "unknown multiple-choice format \"" + name + "\" (" + mc_formats().joined_names() + ")");
}

McFormat detect_mc_format(const json& r) {
  const auto has = [&](const char* key) { return r.contains(key); };
  if (has("context") && has("choices")) return McFormat::generic;
  if (has("endings")) return McFormat::hellaswag;
  if (has("goal") && has("sol1")) return McFormat::piqa;
  if (has("sentence") && has("option1")) return McFormat::winogrande;
  if (has("passage") && has("question")) return McFormat::boolq;
  if (has("question_stem")) return McFormat::openbookqa;
  if (has("question") && has("choices") && has("answerKey")) return McFormat::arc;
  return McFormat::automatic;
}

McItem mc_item_from_record(const json& record, McFormat format, const std::string& where) {
  switch (format) {
    case McFormat::generic: return generic_item(record, where);
    case McFormat::hellaswag: return hellaswag_item(record, where);
    case McFormat::piqa: return piqa_item(record, where);
    case McFormat::arc: return arc_item(record, where);
    case McFormat::winogrande: return winogrande_item(record, where);
    case McFormat::boolq: return boolq_item(record, where);
    case McFormat::openbookqa: return openbookqa_item(record, where);
    case McFormat::automatic: break;
  }
  fail(where, "multiple-choice format not resolved");
}

McDataset load_mc_file(const std::string& path, McFormat format) {
  McDataset dataset;
  dataset.path = path;
  dataset.format = format;
  for_each_jsonl_record(path, [&](const json& record, const std::string& where, int64_t line) {
    if (dataset.format == McFormat::automatic) {
      dataset.format = detect_mc_format(record);
      if (dataset.format == McFormat::automatic) {
        fail(where, "cannot tell the multiple-choice format from this record's fields; name it explicitly");
      }
    }
    auto item = mc_item_from_record(record, dataset.format, where);
    item.line = line;
    dataset.items.push_back(std::move(item));
  });
  if (dataset.items.empty()) fail(path, "no multiple-choice items");
  return dataset;
}

std::string hellaswag_preprocess(const std::string& text) {
  auto out = replace_all(strip(text), " [title]", ". ");
  out = remove_bracketed(out);
  return replace_all(out, "  ", " ");
}

}  // namespace qkd::eval
