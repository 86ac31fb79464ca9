// load_run: reads the files of one run directory into RunData.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"
#include "qkd/report/run_data.h"

namespace qkd::report {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r\n") == std::string::npos; }

std::string read_whole_file(const std::string& path) { return read_text_file(path, size_t{1} << 30); }

json read_json_object(const std::string& path) {
  const json value = read_json_file(path);
  if (!value.is_object()) fail(path, "expected a JSON object");
  return value;
}

// Appends `item`; a step that is not after the last one means the run was resumed from an earlier
// checkpoint, so the records it repeats (steps >= item.step) are superseded and dropped. Events may
// share a step (a spike and the freeze it triggers), so for them only later steps are dropped.
template <typename T>
void append_superseding(std::vector<T>& items, T item, size_t& dropped, bool same_step_allowed = false) {
  while (!items.empty() && (items.back().step > item.step || (!same_step_allowed && items.back().step == item.step))) {
    items.pop_back();
    ++dropped;
  }
  items.push_back(std::move(item));
}

std::string directory_label(const std::string& dir) {
  fs::path path = fs::path(dir).lexically_normal();
  if (path.filename().empty()) path = path.parent_path();
  const std::string name = path.filename().string();
  return name.empty() || name == "." ? fs::absolute(path).lexically_normal().filename().string() : name;
}

// Reads one optional JSONL file into `run` with `add`; records a note when it is missing, when a
// partial last line was ignored, or when records were superseded by a resumed run.
void read_optional_jsonl(RunData& run, const std::string& name, bool& present,
                         const std::function<void(const json&, const std::string&, size_t&)>& add) {
  const std::string path = (fs::path(run.dir) / name).string();
  if (!fs::exists(path)) {
    run.notes.push_back(name + " not found: its sections are omitted");
    return;
  }
  present = true;
  size_t dropped = 0;
  const bool partial =
      read_jsonl(path, [&](const json& record, const std::string& where) { add(record, where, dropped); });
  if (partial) run.notes.push_back(name + ": ignored a partially written last line");
  if (dropped > 0) run.notes.push_back(name + ": " + std::to_string(dropped) + " records superseded after a resume");
}

void add_metrics_record(RunData& run, const json& record, const std::string& where, size_t& dropped) {
  const auto type = record.find("type");
  if (type == record.end() || !type->is_string()) fail(where, "missing string field \"type\"");
  if (*type == "train") append_superseding(run.train, parse_train_record(record, where), dropped);
  if (*type == "eval") append_superseding(run.evals, parse_eval_record(record, where), dropped);
  // Other record types (added later) are not part of the report.
}

}  // namespace

bool read_jsonl(const std::string& path,
                const std::function<void(const json& record, const std::string& where)>& visit) {
  const std::string text = read_whole_file(path);
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    const bool terminated = end != std::string::npos;
    const std::string line = text.substr(start, terminated ? end - start : std::string::npos);
    start = terminated ? end + 1 : text.size();
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const json record = parse_json_or_discarded(line);
    if (record.is_discarded()) {
      if (!terminated) return true;  // the writer was interrupted mid-line
      parse_json(line, where);       // fails with the parser's reason
    }
    if (!record.is_object()) fail(where, "expected a JSON object");
    visit(record, where);
  }
  return false;
}

RunData load_run(const std::string& dir) {
  if (!fs::is_directory(dir)) fail(dir, "run directory not found");
  RunData run;
  run.dir = dir;
  run.label = directory_label(dir);
  const std::string config_path = (fs::path(dir) / "config.json").string();
  const std::string summary_path = (fs::path(dir) / "summary.json").string();
  if (fs::exists(config_path)) {
    run.config = read_json_object(config_path);
    const auto label = run.config.find("label");
    if (label != run.config.end() && label->is_string() && !label->get<std::string>().empty())
      run.label = label->get<std::string>();
  } else {
    run.notes.push_back("config.json not found: no configuration shown");
  }
  if (fs::exists(summary_path)) run.summary = read_json_object(summary_path);
  read_optional_jsonl(
      run, "metrics.jsonl", run.has_metrics,
      [&](const json& r, const std::string& where, size_t& dropped) { add_metrics_record(run, r, where, dropped); });
  read_optional_jsonl(run, "signal.jsonl", run.has_signal,
                      [&](const json& r, const std::string& where, size_t& dropped) {
                        append_superseding(run.signals, parse_signal_record(r, where), dropped);
                      });
  read_optional_jsonl(run, "events.jsonl", run.has_events,
                      [&](const json& r, const std::string& where, size_t& dropped) {
                        append_superseding(run.events, parse_event_record(r, where), dropped, true);
                      });
  if (run.config.is_null() && run.summary.is_null() && !run.has_metrics && !run.has_signal && !run.has_events) {
    fail(dir, "no run files found (metrics.jsonl, signal.jsonl, events.jsonl, config.json, summary.json)");
  }
  return run;
}

}  // namespace qkd::report
