// `qkd-train tokenize` through the binary, against the references: a text record's ids are
// transformers.js's tokenizer(text) ids (special tokens added as the post-processor says); a chat
// record's are jinja2's rendering of the model's template (as transformers' apply_chat_template) encoded
// by transformers.js without added special tokens. Token files hold the same ids, in a width the
// vocabulary fits.
#include <gtest/gtest.h>

#include <fstream>

#include "chat/reference.h"
#include "qkd/data/token_file.h"
#include "test_support.h"
#include "tokenizer/transformers_js.h"
#include "tokenizer_fixtures.h"

using nlohmann::json;

namespace {

std::vector<std::string> sample_texts() {
  std::vector<std::string> texts;
  for (const auto& record : qkd::test::read_jsonl(qkd::test::repo_path("assets/data/kjv/kjv-val.jsonl"))) {
    texts.push_back(record.at("text").get<std::string>().substr(0, 400));
    if (texts.size() == 20) break;
  }
  texts.push_back("def f(x):\n\treturn x ** 2  # 平方 🙂👩‍👩‍👧");
  texts.push_back("<|im_start|>user\nhello<|im_end|> and <|begin_of_text|> in the middle   \r\n  ");
  texts.push_back("Numbers 1234567890 and 3.14159, ΑΒΓ, שלום, नमस्ते");
  return texts;
}

std::vector<std::vector<int64_t>> ids_of(const std::string& jsonl) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& line : qkd::test::read_jsonl(jsonl)) out.push_back(line.at("ids").get<std::vector<int64_t>>());
  return out;
}

}  // namespace

TEST(TokenizeCli, TextRecordsGetTransformersIdsInJsonlAndTokenFiles) {
  const auto dir = qkd::test::scratch_dir("tokenize-text");
  const auto texts = sample_texts();
  {
    std::ofstream out(dir + "/texts.jsonl");
    for (const auto& t : texts) out << json{{"text", t}}.dump() << "\n";
  }
  for (const std::string package : {"tokenizer-llama3_1", "tokenizer-qwen3", "tokenizer-mistral_nemo"}) {
    const auto tokenizer = qkd::test::npm_tokenizer_dir(package);
    const auto cli = qkd::test::run_cli("tokenize --tokenizer " + tokenizer + " --input " + dir +
                                        "/texts.jsonl --out " + dir + "/" + package + ".jsonl --threads 2");
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    std::vector<json> requests(texts.begin(), texts.end());
    const auto reference = qkd::test::transformers_js_encode(package, requests, qkd::test::scratch_dir("ref"));
    const auto ours = ids_of(dir + "/" + package + ".jsonl");
    ASSERT_EQ(ours.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i)
      EXPECT_EQ(ours[i], reference[i].at("with").get<std::vector<int64_t>>()) << package << " text " << i;
    // The token file holds the same ids, concatenated, as uint32 (these vocabularies exceed 65,536).
    const auto u32 = dir + "/" + package + ".u32";
    ASSERT_EQ(qkd::test::run_cli("tokenize --tokenizer " + tokenizer + " --input " + dir + "/texts.jsonl --out " + u32)
                  .exit_code,
              0);
    const auto file = qkd::data::TokenFile::open(u32);
    std::vector<int64_t> flat;
    for (const auto& r : ours) flat.insert(flat.end(), r.begin(), r.end());
    ASSERT_EQ(file.size(), static_cast<int64_t>(flat.size()));
    for (int64_t i = 0; i < file.size(); ++i) ASSERT_EQ(file.at(i), flat[i]) << "token " << i;
    // A .u16 file cannot hold these ids: refused before anything is read, naming --out.
    const auto narrow = qkd::test::run_cli("tokenize --tokenizer " + tokenizer + " --input " + dir +
                                           "/texts.jsonl --out " + dir + "/x.u16");
    EXPECT_NE(narrow.exit_code, 0);
    EXPECT_NE(narrow.output.find("--out"), std::string::npos) << narrow.output;
    EXPECT_NE(narrow.output.find(".u32"), std::string::npos) << narrow.output;
  }
}

TEST(TokenizeCli, ChatRecordsGetApplyChatTemplateIds) {
  const auto dir = qkd::test::scratch_dir("tokenize-chat");
  qkd::test::chat::ConversationGenerator generator(7, qkd::test::chat::ToolStyle::none);
  std::vector<qkd::test::chat::Case> cases;
  while (cases.size() < 25) {
    auto c = generator.next();
    if (!c.breaks_roles && c.variables.empty()) cases.push_back(c);
  }
  {
    std::ofstream out(dir + "/chat.jsonl");
    for (const auto& c : cases) out << qkd::test::chat::Json{{"messages", c.messages}}.dump() << "\n";
  }
  for (const std::string package : {"tokenizer-qwen3", "tokenizer-llama3_1"}) {
    const auto tokenizer = qkd::test::npm_tokenizer_dir(package);
    const auto cli = qkd::test::run_cli("tokenize --tokenizer " + tokenizer + " --input " + dir + "/chat.jsonl --out " +
                                        dir + "/" + package + ".jsonl");
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    const auto rendered = qkd::test::chat::render_reference({tokenizer + "/tokenizer_config.json", "", qkd::test::chat::Json::object()},
                                                            cases, "", qkd::test::scratch_dir("jinja"));
    std::vector<json> texts;
    for (size_t i = 0; i < rendered.results.size(); i += 2) {  // add_generation_prompt false, then true
      ASSERT_TRUE(rendered.results[i].ok) << rendered.results[i].error;
      texts.push_back(rendered.results[i].text);
    }
    const auto reference = qkd::test::transformers_js_encode(package, texts, qkd::test::scratch_dir("ref"));
    const auto ours = ids_of(dir + "/" + package + ".jsonl");
    ASSERT_EQ(ours.size(), cases.size());
    for (size_t i = 0; i < cases.size(); ++i)
      EXPECT_EQ(ours[i], reference[i].at("without").get<std::vector<int64_t>>()) << package << " conversation " << i;
  }
}

TEST(TokenizeCli, TxtParagraphsAndATokenizerOnlyDirectory) {
  const auto dir = qkd::test::scratch_dir("tokenize-txt");
  std::ofstream(dir + "/book.txt") << "In the beginning God created the heaven and the earth.\n\nAnd the earth was "
                                      "without form,\nand void.\n";
  const auto kjv = qkd::test::repo_path("assets/data/kjv");  // tokenizer.model only, no weights
  const auto cli = qkd::test::run_cli("tokenize --tokenizer " + kjv + " --input " + dir + "/book.txt --out " + dir +
                                      "/book.u16 --eos");
  ASSERT_EQ(cli.exit_code, 0) << cli.output;
  const auto file = qkd::data::TokenFile::open(dir + "/book.u16");
  int64_t bos = 0, eos = 0;
  for (int64_t i = 0; i < file.size(); ++i) {
    bos += file.at(i) == 1;
    eos += file.at(i) == 2;
  }
  EXPECT_EQ(bos, 2);  // two paragraphs, each as tokenizer(text): <s> + text
  EXPECT_EQ(eos, 2);  // --eos
  const auto bad = qkd::test::run_cli("tokenize --tokenizer " + kjv + " --input " + dir + "/book.txt --out " + dir +
                                      "/book.bin");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--out"), std::string::npos) << bad.output;
}
