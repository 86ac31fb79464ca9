#include "tokenizer/text_corpus.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace qkd::test {

namespace {

// splitmix64: the same sequence on every platform (std::uniform_int_distribution is not).
class Random {
 public:
  explicit Random(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <typename T>
  const T& pick(const std::vector<T>& items) {
    return items[below(items.size())];
  }

 private:
  uint64_t state_;
};

const std::vector<std::string> kScripts = {
    // CJK, Japanese, Korean
    "我想在apple工作1314151天～", "你好，世界！这是一个测试。", "東京都は日本の首都です。",
    "ひらがなとカタカナ、漢字。", "한국어 텍스트입니다. 안녕하세요!", "中文分词测试，包含标点：「引号」与《书名》。",
    "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ",
    // Arabic, Hebrew (with points), Persian
    "مرحبا بالعالم", "اللغة العربية جميلة ١٢٣٤", "שלום עולם", "עִבְרִית עִם נִקּוּד", "زبان فارسی ۱۴۰۲",
    // Indic, Thai, Khmer
    "नमस्ते दुनिया", "हिन्दी भाषा में क्षत्रिय", "বাংলা লেখা", "தமிழ் எழுத்து", "สวัสดีครับ", "ภาษาไทยไม่มีช่องว่าง", "កាន់តែពិសេសអាច",
    // Cyrillic, Greek, Georgian, Armenian
    "Привет, мир!", "нещо на Български", "ЁЖИК в тумане", "Καλημέρα κόσμε", "ΑΒΓΔ αβγδ ΐΰ ς", "ქართული ენა",
    "Հայերեն լեզու",
    // Latin with diacritics, precomposed and decomposed (NFD), and sequences NFC reorders or composes
    "naïve café résumé", "Straße GROSS", "İstanbul ıi", "Ĳssel ŉ Ǆ", "e\u0301te\u0301", "a\u0308o\u0308u\u0308",
    "n\u0303", "A\u030Angstro\u0308m", "\u2126hm", "s\u0307\u0323", "e\u0323\u0302", "x\u0301\u0301\u0301",
    "\u1112\u1161\u11AB\u1100\u1173\u11AF", "ﬁle ﬂow", "Ünïcödé ÀÉÎÕÜ", "Tiếng Việt có dấu", "ḱṓṩ",
    "\u0041\u0301\u0328"};

const std::vector<std::string> kEmoji = {"🚀",
                                         "😶\u200d🌫️",
                                         "👨\u200d👩\u200d👧\u200d👦",
                                         "🏳️\u200d🌈",
                                         "🇺🇸🇯🇵🇩🇪",
                                         "👍🏽",
                                         "1️⃣",
                                         "❤️",
                                         "🦙🦙",
                                         "✅",
                                         "🧑🏿\u200d💻",
                                         "😁",
                                         "🙂🙃",
                                         "🎉🎊",
                                         "🐍",
                                         "⚡",
                                         "☕",
                                         "🏴\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F"};

const std::vector<std::string> kCode = {
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "class Point:\n\tdef __init__(self, x, y):\n\t\tself.x = x\n\t\tself.y = y\n",
    "for i in range(10):\n    print(f\"{i:>3} -> {i**2}\")  # squares\n",
    "#include <vector>\n\nint main() {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x *= 2;\n  return 0;\n}\n",
    "template <typename T>\nT max(T a, T b) { return a > b ? a : b; }\n",
    "{\"key\": [1, 2.5e-3, null], \"nested\": {\"a\": \"b\", \"c\": true}}",
    "{\n\t\"name\": \"qkd\",\n\t\"version\": \"0.1.0\",\n\t\"deps\": []\n}\n",
    "ls -la | grep \"\\.cpp$\" && echo $HOME",
    "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "if (a != b && c <= d || !e) { x += y; } else { x -= y; }",
    "    indented line\n        more indented\n\tand a tab\n",
    "x=1;y=2;z=x+y;//sum\n/* block\n   comment */",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }"};

const std::vector<std::string> kWhitespace = {
    " ",  "  ",     "   ",    "\t",     "\t\t",   "\n",     "\r\n",   "\n\n\n", "   \n  ", " \t ",  "\v",
    "\f", "\u00A0", "\u3000", "\u2003", "\u2028", "\u2029", "\u180E", "\u200B", "\r",      "\n \n", "\t\n\t"};

const std::vector<std::string> kContractions = {
    "I'VE",   "don't", "She'S", "we'Ll",  "'RE you sure?", "y'all'd've",    "O'Neil's", "it’s", "DON'T",
    "'d",     "'M",    "I'm",   "you're", "they've",       "he'd",          "we'll",    "It'S", "'t",
    "''''''", "'Ve",   "WE'LL", "can't",  "won't",         "rock 'n' roll", "'tis",     "'s"};

const std::vector<std::string> kOddUtf8 = {std::string(1, '\0'),
                                           "\x01",
                                           "\x7F",
                                           "\u0080",
                                           "\u009F",
                                           "\uFFFD",
                                           "\uFFFF",
                                           "\U0010FFFF",
                                           "\uE000",
                                           "\U000E0001",
                                           "\uD7FF",
                                           "\U0001F9FF",
                                           "\u00AD",
                                           "\u202E",
                                           "\u2060",
                                           "\U0001D7D9\U0001D7DA",
                                           "\U00020000",
                                           "\uFFFC",
                                           "\u034F",
                                           "\U0001F3FB",
                                           std::string("\0a\0", 3)};

const std::vector<std::string> kSpecialTokens = {"<|im_start|>",
                                                 "<|im_end|>",
                                                 "<|eot_id|>",
                                                 "<|begin_of_text|>",
                                                 "<|endoftext|>",
                                                 "<s>",
                                                 "</s>",
                                                 "[INST]",
                                                 "[/INST]",
                                                 "<unk>",
                                                 "<|start_header_id|>",
                                                 "<|end_header_id|>",
                                                 "<think>",
                                                 "</think>",
                                                 "<tool_call>",
                                                 "<|im_start|",
                                                 "<s",
                                                 "</ s>",
                                                 "<|eot_id",
                                                 "[INST",
                                                 "<<s>>",
                                                 "<s><s>",
                                                 "[/INST]</s>",
                                                 "<|im_end|>\n",
                                                 "< s>"};

const std::vector<std::string> kWords = {
    "the",   "The",  "quick", "brown", "fox", "jumps", "over",  "lazy", "dog", "Hello", "world", "HELLO", "tokenizer",
    "Llama", "Qwen", "data",  "a",     "I",   "x",     "naïve", "GPU",  "is",  "of",    "and",   "to",    "in"};

const std::vector<std::string> kSeparators = {"", " ", " ", " ", "\n", "  ", "\t", ", ", ". ", "\n\n"};

std::vector<std::string> kjv_sentences(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto text = nlohmann::json::parse(line).at("text").get<std::string>();
    // Cut after ". ", ": " and "; " into verse-sized pieces.
    size_t start = 0;
    for (size_t i = 0; i + 1 < text.size(); ++i) {
      if ((text[i] == '.' || text[i] == ':' || text[i] == ';') && text[i + 1] == ' ') {
        out.push_back(text.substr(start, i + 1 - start));
        start = i + 2;
      }
    }
    if (start < text.size()) out.push_back(text.substr(start));
  }
  if (out.empty()) throw std::runtime_error(path + " holds no text");
  return out;
}

std::string number(Random& r) {
  switch (r.below(8)) {
    case 0: {
      std::string digits;
      const size_t length = 1 + r.below(40);
      for (size_t i = 0; i < length; ++i) digits += static_cast<char>('0' + r.below(10));
      return digits;
    }
    case 1: return std::to_string(r.below(1000)) + "." + std::to_string(r.below(100000));
    case 2:
      return std::to_string(r.below(10)) + "," + std::to_string(100 + r.below(900)) + "," +
             std::to_string(100 + r.below(900));
    case 3: return "-" + std::to_string(r.below(100000));
    case 4: return std::to_string(1 + r.below(9)) + "e" + std::to_string(r.below(30));
    case 5:
      return r.pick(std::vector<std::string>{"٣٤٥", "१२३", "１２３", "²³", "½¾", "Ⅻ", "𝟙𝟚", "0x1F", "3..3", "3...3",
                                             "1/2", "10%", "$4.99", "2024-01-31", "12:30:45"});
    case 6: return std::to_string(r.next() % 100000000000ull);
    default: return std::to_string(r.below(10));
  }
}

std::string fragment(Random& r, const std::vector<std::string>& kjv) {
  switch (r.below(10)) {
    case 0: return r.pick(kjv);
    case 1: return r.pick(kScripts);
    case 2: return r.pick(kEmoji);
    case 3: return r.pick(kCode);
    case 4: return number(r);
    case 5: return r.pick(kWhitespace);
    case 6: return r.pick(kContractions);
    case 7: return r.pick(kOddUtf8);
    case 8: return r.pick(kSpecialTokens);
    default: return r.pick(kWords);
  }
}

std::string joined(Random& r, size_t parts, const std::vector<std::string>& pool) {
  std::string out;
  for (size_t i = 0; i < parts; ++i) out += (i ? r.pick(kSeparators) : "") + r.pick(pool);
  return out;
}

std::string changed_case(Random& r, std::string text) {
  const auto mode = r.below(3);
  for (auto& c : text) {
    if (mode == 0 && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (mode == 1 && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    if (mode == 2 && r.chance(30) && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) c ^= 0x20;
  }
  return text;
}

// One text of a randomly chosen kind.
std::string text_of_some_kind(Random& r, const std::vector<std::string>& kjv) {
  switch (r.below(11)) {
    case 0: return r.pick(kjv);
    case 1: return r.pick(kWhitespace) + r.pick(kjv) + (r.chance(50) ? r.pick(kWhitespace) : "");
    case 2: return changed_case(r, r.pick(kjv));
    case 3: return joined(r, 1 + r.below(4), kScripts);
    case 4: return joined(r, 2 + r.below(4), kWords) + " " + joined(r, 1 + r.below(3), kEmoji);
    case 5: {
      auto code = r.pick(kCode);
      if (r.chance(30)) code = std::string(1 + r.below(8), r.chance(50) ? ' ' : '\t') + code;
      if (r.chance(30)) code += std::string(1 + r.below(4), ' ');
      return code;
    }
    case 6: {
      std::string out;
      for (size_t i = 0, n = 1 + r.below(6); i < n; ++i) out += (i ? r.pick(kSeparators) : "") + number(r);
      return r.chance(50) ? r.pick(kWords) + " " + out : out;
    }
    case 7: {
      std::string out = r.chance(50) ? r.pick(kWhitespace) : "";
      for (size_t i = 0, n = 2 + r.below(5); i < n; ++i) out += r.pick(kWords) + r.pick(kWhitespace);
      return out;
    }
    case 8: return joined(r, 1 + r.below(5), kContractions) + " " + changed_case(r, r.pick(kContractions));
    case 9: {
      // Special tokens at the start, in the middle and at the end of ordinary text.
      std::string out = r.chance(40) ? r.pick(kSpecialTokens) : "";
      out += r.chance(50) ? r.pick(kjv) : joined(r, 2 + r.below(3), kWords);
      if (r.chance(60)) out += r.pick(kSeparators) + r.pick(kSpecialTokens) + r.pick(kSeparators) + r.pick(kWords);
      if (r.chance(40)) out += r.pick(kSpecialTokens);
      return out;
    }
    default: {
      std::string out;
      for (size_t i = 0, n = 2 + r.below(7); i < n; ++i) out += fragment(r, kjv) + r.pick(kSeparators);
      return out;
    }
  }
}

}  // namespace

std::vector<std::string> tokenizer_test_texts(size_t count, uint64_t seed, const std::string& kjv_jsonl) {
  const auto kjv = kjv_sentences(kjv_jsonl);
  // Edges first: empty and white-space-only texts, lone special tokens, text touching them.
  std::vector<std::string> texts = {"",
                                    " ",
                                    "\n",
                                    "  ",
                                    "\t",
                                    "a",
                                    "<s>",
                                    "<|im_start|>",
                                    " <s> ",
                                    "<|eot_id|><|eot_id|>",
                                    "hello<s>",
                                    "</s>hello",
                                    "[INST] hi [/INST]",
                                    "  leading",
                                    "trailing   ",
                                    "\r\n\r\n",
                                    "x\n\n\ny",
                                    "<|begin_of_text|>",
                                    "<|endoftext|>",
                                    "ok "};
  Random r(seed);
  while (texts.size() < count) texts.push_back(text_of_some_kind(r, kjv));
  texts.resize(count);
  return texts;
}

std::vector<std::string> tokenizer_test_invalid_utf8(size_t count, uint64_t seed) {
  const std::vector<std::string> bad = {
      "\x80",     "\xBF", "\xC0\x80", "\xC1\xBF", "\xE0\x80\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80",
      "\xF5\x80", "\xFF", "\xFE",     "\xE2\x82", "\xF0\x9F\x98", "\xC3",         "\xE2\x28\xA1"};
  Random r(seed);
  std::vector<std::string> out;
  while (out.size() < count) {
    std::string text;
    for (size_t i = 0, n = 1 + r.below(5); i < n; ++i) {
      text += r.chance(50) ? r.pick(kWords) : r.pick(kScripts);
      text += r.pick(bad);
      if (r.chance(40)) text += r.pick(kSeparators);
    }
    out.push_back(text);
  }
  return out;
}

}  // namespace qkd::test
