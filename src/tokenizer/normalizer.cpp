#include "normalizer.h"

#include <vector>

#include "text_pattern.h"
#include "unicode_text.h"

namespace qkd::tokenizer {

namespace {

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::NormalForm form) : form_(form) {}
  void normalize(std::string& text, std::string& scratch) const override {
    unicode::normalize(form_, text, scratch);
    text.swap(scratch);
  }

 private:
  unicode::NormalForm form_;
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text, std::string&) const override {
    if (!text.empty()) text.insert(0, prefix_);  // an empty stretch stays empty
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  Replace(TextPattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text, std::string& scratch) const override {
    scratch.clear();
    pattern_.replace_all(text, content_, scratch);
    text.swap(scratch);
  }

 private:
  TextPattern pattern_;
  std::string content_;
};

class Sequence final : public Normalizer {
 public:
  explicit Sequence(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text, std::string& scratch) const override {
    for (const auto& step : steps_) step->normalize(text, scratch);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& config, const JsonPlace& place) {
  if (config.is_null()) return nullptr;
  const auto type = component_type(config, place);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::NormalForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::NormalForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::NormalForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::NormalForm::nfkd);
  if (type == "Prepend") return std::make_unique<Prepend>(place.reader(config).required_string("prepend"));
  if (type == "Replace") {
    const auto pattern = config.find("pattern");
    if (pattern == config.end()) place.field("pattern").fail_here("missing (required)");
    return std::make_unique<Replace>(TextPattern::from_json(*pattern, place.field("pattern")),
                                     place.reader(config).required_string("content"));
  }
  if (type == "Sequence") {
    const auto& list = required_array(config, "normalizers", place);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = make_normalizer(list[i], place.field("normalizers").element(i));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<Sequence>(std::move(steps));
  }
  unsupported_type(place, type);
}

}  // namespace qkd::tokenizer
