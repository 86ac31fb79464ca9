#include "qkd/train/rank_agreement.h"

#include "qkd/common/error.h"
#include "qkd/common/json_io.h"

namespace qkd::train {

namespace {
// "/quant/bits" -> "quant.bits".
std::string dotted(const std::string& pointer) {
  std::string out;
  for (const char c : pointer.substr(pointer.empty() ? 0 : 1)) out += c == '/' ? '.' : c;
  return out.empty() ? "(the whole record)" : out;
}

std::string value_at(const nlohmann::json& j, const std::string& pointer) {
  const nlohmann::json::json_pointer at(pointer);
  return j.contains(at) ? json_excerpt(j.at(at), 60) : "(absent)";
}
}  // namespace

void require_same_on_every_rank(distributed::Communicator& ranks, const nlohmann::json& what, const std::string& stage) {
  if (!ranks.distributed()) return;
  const auto texts = ranks.exchange_text(stage, what.dump());
  const auto root = parse_json(texts[0], "rank 0's " + stage);
  for (int r = 1; r < static_cast<int>(texts.size()); ++r) {
    if (texts[r] == texts[0]) continue;
    const auto other = parse_json(texts[r], "rank " + std::to_string(r) + "'s " + stage);
    const auto diff = nlohmann::json::diff(root, other);
    const std::string pointer = diff.empty() ? "" : diff[0].value("path", std::string());
    fail("distributed " + stage, "rank " + std::to_string(r) + "'s " + dotted(pointer) + " is " +
                                     value_at(other, pointer) + ", rank 0's is " + value_at(root, pointer) +
                                     ": every rank must run the same configuration");
  }
}

}  // namespace qkd::train
