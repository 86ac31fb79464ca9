#include "qkd/eval/jsonl_lines.h"

#include <fstream>

#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"

namespace qkd::eval {

namespace {
bool is_blank(const std::string& line) { return line.find_first_not_of(" \t\r\n") == std::string::npos; }

// An evaluation record is a document or an item, never a corpus: a longer line is an error, found
// before it is held whole (one 100 MB line grew the process past 8 GB as it was tokenized).
constexpr size_t kMaxRecordBytes = size_t{16} << 20;

// The next line of `in` into `line`; false at end of file. Fails naming `where` past the limit.
bool read_bounded_line(std::istream& in, std::string& line, const std::string& where) {
  line.clear();
  std::streambuf* buffer = in.rdbuf();
  bool any = false;
  for (int c = buffer->sbumpc(); c != std::char_traits<char>::eof(); c = buffer->sbumpc()) {
    any = true;
    if (c == '\n') return true;
    if (line.size() == kMaxRecordBytes)
      fail(where, "line longer than " + std::to_string(kMaxRecordBytes >> 20) + " MiB: not one evaluation record");
    line.push_back(static_cast<char>(c));
  }
  return any;
}
}  // namespace

void for_each_jsonl_record(
    const std::string& path,
    const std::function<void(const nlohmann::json& record, const std::string& where, int64_t line)>& visit) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open file");
  std::string line;
  int64_t line_no = 0;
  while (read_bounded_line(in, line, path + ":" + std::to_string(line_no + 1))) {
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const auto record = parse_json(line, where);
    if (!record.is_object()) fail(where, "expected a JSON object");
    visit(record, where, line_no);
  }
}

const std::string& require_string(const nlohmann::json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end()) fail(where, std::string("missing field \"") + key + "\"");
  if (!it->is_string()) fail(where, std::string("field \"") + key + "\" is not a string");
  return it->get_ref<const std::string&>();
}

}  // namespace qkd::eval
