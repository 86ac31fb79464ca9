#include "qkd/common/output_directory.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "qkd/common/atomic_file.h"
#include "qkd/common/error.h"
#include "qkd/common/input_file.h"
#include "qkd/common/json_io.h"

namespace qkd {

namespace fs = std::filesystem;

namespace {
// The kind a directory's marker names; "" without a readable marker.
std::string marked_kind(const std::string& dir) {
  const auto marker = fs::path(dir) / kOutputMarker;
  std::error_code ec;
  if (!fs::is_regular_file(fs::symlink_status(marker, ec))) return "";
  const auto json = parse_json_or_discarded(read_text_file(marker.string(), 4096));
  return json.is_object() && json.contains("kind") && json.at("kind").is_string() ? json.at("kind").get<std::string>()
                                                                                 : "";
}

bool is_empty_directory(const std::string& dir) {
  std::error_code ec;
  return fs::directory_iterator(dir, ec) == fs::directory_iterator();
}
}  // namespace

void claim_output_directory(const std::string& dir, const std::string& kind) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail(dir, std::string("cannot inspect the output path: ") + std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) fail(dir, "the output path is a symbolic link; refusing to replace it");
  if (!S_ISDIR(st.st_mode)) fail(dir, "the output path exists and is not a directory; refusing to replace it");
  if (is_empty_directory(dir)) return;
  const auto found = marked_kind(dir);
  if (found == kind) return;
  fail(dir, found.empty() ? "exists and holds files qkd-train did not write as a " + kind +
                                " (no " + kOutputMarker + "); choose another path, or empty it"
                          : "holds qkd-train's " + found + ", not a " + kind + "; choose another path");
}

void write_output_marker(const std::string& dir, const std::string& kind) {
  write_text_atomically((fs::path(dir) / kOutputMarker).string(),
                        nlohmann::json{{"kind", kind}, {"written_by", "qkd-train"}}.dump() + "\n");
}

void require_apart(const std::string& output, const std::string& output_option, const std::string& input,
                   const std::string& input_option) {
  std::error_code ec;
  const auto out = fs::weakly_canonical(fs::absolute(output), ec).lexically_normal();
  const auto in = fs::weakly_canonical(fs::absolute(input), ec).lexically_normal();
  const auto inside = [](const fs::path& a, const fs::path& b) {  // a is b or below it
    const auto rel = a.lexically_relative(b);
    return !rel.empty() && *rel.begin() != "..";
  };
  if (inside(in, out))
    fail(output_option, output + (in == out ? " is " : " holds ") + input_option + " " + input +
                            ": writing it would replace what the command reads");
}

}  // namespace qkd
