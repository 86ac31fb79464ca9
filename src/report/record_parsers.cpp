// Parsers of the single JSONL records of metrics.jsonl, signal.jsonl and events.jsonl.
#include <cmath>
#include <limits>

#include "qkd/common/error.h"
#include "qkd/report/run_data.h"

namespace qkd::report {

namespace {

using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Writers may spell non-finite values as null or as strings ("NaN", "Infinity", "-inf").
double number_from(const json& value, const std::string& where, const std::string& name) {
  if (value.is_null()) return kNaN;
  if (value.is_number()) return value.get<double>();
  if (value.is_string()) {
    const auto& text = value.get_ref<const std::string&>();
    if (text == "nan" || text == "NaN" || text == "-nan") return kNaN;  // -nan: std::to_string of some NaNs
    if (text == "inf" || text == "Infinity" || text == "+inf") return std::numeric_limits<double>::infinity();
    if (text == "-inf" || text == "-Infinity") return -std::numeric_limits<double>::infinity();
  }
  fail(where, "field \"" + name + "\" is not a number");
}

double optional_number(const json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  return it == record.end() ? kNaN : number_from(*it, where, key);
}

int64_t required_step(const json& record, const std::string& where) {
  const auto it = record.find("step");
  if (it == record.end()) fail(where, "missing field \"step\"");
  if (!it->is_number_integer() || it->get<int64_t>() < 0) fail(where, "field \"step\" is not a non-negative integer");
  return it->get<int64_t>();
}

std::string optional_string(const json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return "";
  if (!it->is_string()) fail(where, std::string("field \"") + key + "\" is not a string");
  return it->get<std::string>();
}

const json* optional_object(const json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return nullptr;
  if (!it->is_object()) fail(where, std::string("field \"") + key + "\" is not an object");
  return &*it;
}

ProjectionValues projection_values(const json& record, const char* key, const std::string& where) {
  ProjectionValues values;
  if (const json* object = optional_object(record, key, where)) {
    for (const auto& [name, value] : object->items())
      values[name] = number_from(value, where, std::string(key) + "." + name);
  }
  return values;
}

LayerSignal parse_layer(const json& layer, const std::string& where) {
  if (!layer.is_object()) fail(where, "an entry of \"layers\" is not an object");
  LayerSignal out;
  const auto it = layer.find("layer");
  if (it == layer.end() || !it->is_number_integer()) fail(where, "a layer entry lacks an integer \"layer\"");
  out.layer = it->get<int64_t>();
  if (out.layer < 0 || out.layer > 65535) fail(where, "layer index " + std::to_string(out.layer) + " out of range");
  out.grad_sq = projection_values(layer, "grad_sq", where);
  out.weight_norm = projection_values(layer, "weight_norm", where);
  out.update_ratio = projection_values(layer, "update_ratio", where);
  out.quant_error = projection_values(layer, "quant_error", where);
  out.attn_rms = optional_number(layer, "attn_rms", where);
  out.mlp_rms = optional_number(layer, "mlp_rms", where);
  return out;
}

}  // namespace

TrainPoint parse_train_record(const json& record, const std::string& where) {
  TrainPoint p;
  p.step = required_step(record, where);
  p.loss = optional_number(record, "loss", where);
  p.kd = optional_number(record, "kd", where);
  p.ce = optional_number(record, "ce", where);
  p.lr = optional_number(record, "lr", where);
  p.grad_norm = optional_number(record, "grad_norm", where);
  p.tokens_per_s = optional_number(record, "tokens_per_s", where);
  p.peak_mem_mb = optional_number(record, "peak_mem_mb", where);
  return p;
}

EvalPoint parse_eval_record(const json& record, const std::string& where) {
  EvalPoint p;
  p.step = required_step(record, where);
  if (const json* ppl = optional_object(record, "ppl", where)) {
    for (const auto& [name, value] : ppl->items()) p.ppl[name] = number_from(value, where, "ppl." + name);
  }
  if (const json* mc = optional_object(record, "mc", where)) {
    for (const auto& [name, scores] : mc->items()) {
      if (!scores.is_object()) fail(where, "field \"mc." + name + "\" is not an object");
      McScore s;
      s.acc = optional_number(scores, "acc", where);
      s.acc_norm = optional_number(scores, "acc_norm", where);
      const auto n = scores.find("n");
      s.n = n != scores.end() && n->is_number_integer() ? n->get<int64_t>() : 0;
      p.mc[name] = s;
    }
  }
  return p;
}

SignalPoint parse_signal_record(const json& record, const std::string& where) {
  SignalPoint p;
  p.step = required_step(record, where);
  const auto layers = record.find("layers");
  if (layers != record.end() && !layers->is_null()) {
    if (!layers->is_array()) fail(where, "field \"layers\" is not an array");
    for (const auto& layer : *layers) p.layers.push_back(parse_layer(layer, where));
  }
  p.total_grad_sq = projection_values(record, "total_grad_sq", where);
  return p;
}

RunEvent parse_event_record(const json& record, const std::string& where) {
  RunEvent e;
  e.step = required_step(record, where);
  e.kind = optional_string(record, "kind", where);
  if (e.kind.empty()) fail(where, "missing field \"kind\"");
  e.series = optional_string(record, "series", where);
  e.reason = optional_string(record, "reason", where);
  e.value = optional_number(record, "value", where);
  e.baseline = optional_number(record, "baseline", where);
  const auto modules = record.find("modules");
  if (modules != record.end() && !modules->is_null()) {
    if (!modules->is_array()) fail(where, "field \"modules\" is not an array");
    for (const auto& m : *modules) {
      if (!m.is_string()) fail(where, "an entry of \"modules\" is not a string");
      e.modules.push_back(m.get<std::string>());
    }
  }
  return e;
}

}  // namespace qkd::report
