// Data config validation, record rendering, packing, malformed records and source errors.
#include <gtest/gtest.h>

#include <algorithm>

#include "qkd/common/error.h"
#include "qkd/data/data_stream.h"
#include "qkd/data/record_render.h"
#include "test_support.h"

using qkd::data::DataConfig;
using qkd::data::DataStream;
using qkd::data::SourceFormat;
using qkd::tokenizer::Tokenizer;

namespace {

const Tokenizer& kjv_tokenizer() {
  static const Tokenizer tok(qkd::test::repo_path("assets/data/kjv/tokenizer.model"));
  return tok;
}

std::string fixture(const std::string& name) { return qkd::test::repo_path("tests/fixtures/data/") + name; }

DataConfig one_source(const std::string& path, int64_t seq_len, bool shuffle = false) {
  DataConfig config;
  config.sources.push_back({path});
  config.seq_len = seq_len;
  config.shuffle = shuffle;
  return config;
}

std::vector<int64_t> take_tokens(DataStream& stream, int64_t windows) {
  const auto batch = stream.next_batch(windows);
  return {batch.data_ptr<int64_t>(), batch.data_ptr<int64_t>() + batch.numel()};
}

// The message of the qkd::Error `f` throws ("" when it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const qkd::Error& e) {
    return e.what();
  }
  return "";
}

// Concatenation of `encode(doc, bos, eos)` over documents, repeated to at least n tokens.
std::vector<int64_t> expected_stream(const std::vector<std::string>& docs, size_t n) {
  std::vector<int64_t> out;
  while (out.size() < n) {
    for (const auto& d : docs) {
      const auto ids = kjv_tokenizer().encode(d, true, true);
      out.insert(out.end(), ids.begin(), ids.end());
    }
  }
  out.resize(n);
  return out;
}

}  // namespace

TEST(DataConfig, ParsesAllFields) {
  const auto json = nlohmann::json::parse(R"({"sources": [{"path": "a.jsonl", "format": "alpaca", "weight": 3},
      {"path": "b.u16"}], "seq_len": 128, "seed": 7, "shuffle": false, "shuffle_buffer": 4, "strict": true,
      "add_bos": false, "add_eos": true})");
  const auto config = qkd::data::data_config_from_json(json);
  ASSERT_EQ(config.sources.size(), 2u);
  EXPECT_EQ(config.sources[0].format, SourceFormat::alpaca);
  EXPECT_DOUBLE_EQ(config.sources[0].weight, 3.0);
  EXPECT_EQ(config.sources[1].format, SourceFormat::automatic);
  EXPECT_EQ(config.seq_len, 128);
  EXPECT_EQ(config.seed, 7u);
  EXPECT_FALSE(config.shuffle);
  EXPECT_EQ(config.shuffle_buffer, 4);
  EXPECT_TRUE(config.strict);
  EXPECT_FALSE(config.add_bos);
  EXPECT_EQ(qkd::data::data_config_from_json(qkd::data::data_config_to_json(config)).seq_len, 128);
}

TEST(DataConfig, ErrorsNameTheJsonPath) {
  auto error_for = [](const char* text) {
    return error_of([&] { qkd::data::data_config_from_json(nlohmann::json::parse(text), "train.data"); });
  };
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt"}, {"path": "b.txt", "weight": -1}]})"),
            "train.data.sources[1].weight: expected a positive number, got -1");
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt", "fromat": "txt"}]})")
                .rfind("train.data.sources[0].fromat: unknown key", 0),
            0u);
  EXPECT_EQ(error_for(R"({"sources": [], "seq_len": 8})"), "train.data.sources: expected a non-empty array, got []");
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt"}], "seq_len": 0})"),
            "train.data.seq_len: expected a positive integer, got 0");
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt", "format": "csv"}]})")
                .rfind("train.data.sources[0].format: expected one of auto|", 0),
            0u);
  EXPECT_EQ(error_for(R"({"sources": [{"weight": 1}]})").rfind("train.data.sources[0].path: missing", 0), 0u);
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt"}], "shuffle": "yes"})"),
            "train.data.shuffle: expected true or false, got \"yes\"");
  EXPECT_EQ(error_for(R"({"sources": [{"path": "a.txt"}], "batch": 4})").rfind("train.data.batch: unknown key", 0), 0u);
}

TEST(DataRender, ShareGptUsesTheLlama2ChatTemplate) {
  const auto record = nlohmann::json::parse(R"({"conversations": [{"from": "system", "value": "Be brief."},
      {"from": "human", "value": " Hi? "}, {"from": "gpt", "value": "Hello."},
      {"from": "human", "value": "Bye?"}, {"from": "gpt", "value": "Bye."}]})");
  const auto rendered = qkd::data::render_sharegpt_record(record);
  ASSERT_TRUE(rendered.error.empty()) << rendered.error;
  ASSERT_EQ(rendered.segments.size(), 2u);
  EXPECT_EQ(rendered.segments[0].text, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. ");
  EXPECT_EQ(rendered.segments[1].text, "[INST] Bye? [/INST] Bye. ");
  const auto& tok = kjv_tokenizer();
  const auto ids = qkd::data::tokenize_segments(rendered.segments, tok);
  std::vector<int64_t> expected{tok.special().bos};
  for (auto id : tok.encode(rendered.segments[0].text)) expected.push_back(id);
  expected.push_back(tok.special().eos);
  expected.push_back(tok.special().bos);
  for (auto id : tok.encode(rendered.segments[1].text)) expected.push_back(id);
  expected.push_back(tok.special().eos);
  EXPECT_EQ(ids, expected);
  // BOS/EOS are ids, never the text "<s>" pieces.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.special().bos), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.special().eos), 2);
}

TEST(DataRender, ShareGptRejectsBadTurns) {
  auto error_for = [](const char* text) {
    return qkd::data::render_sharegpt_record(nlohmann::json::parse(text)).error;
  };
  EXPECT_EQ(error_for(R"({"conv": []})"), "missing field 'conversations'");
  EXPECT_NE(error_for(R"({"conversations": [{"from": "gpt", "value": "x"}]})"), "");
  EXPECT_NE(error_for(R"({"conversations": [{"from": "bot", "value": "x"}]})"), "");
  EXPECT_EQ(error_for(R"({"conversations": [{"from": "human", "value": "x"}]})"), "");  // open question is fine
}

TEST(DataRender, AlpacaTemplate) {
  const auto with_input = qkd::data::render_alpaca_record(
      nlohmann::json::parse(R"({"instruction": "Add.", "input": "4 and 9", "output": "13"})"), true, true);
  EXPECT_EQ(with_input.segments.at(0).text, "### Instruction:\nAdd.\n\n### Input:\n4 and 9\n\n### Response:\n13");
  const auto without = qkd::data::render_alpaca_record(
      nlohmann::json::parse(R"({"instruction": "Name one.", "output": "Green."})"), true, true);
  EXPECT_EQ(without.segments.at(0).text, "### Instruction:\nName one.\n\n### Response:\nGreen.");
  EXPECT_EQ(qkd::data::render_alpaca_record(nlohmann::json::parse(R"({"instruction": "x"})"), true, true).error,
            "missing field 'output'");
}

TEST(DataSources, AutoDetectsFormats) {
  auto format_of = [](const std::string& name) { return qkd::data::resolve_source_format({fixture(name)}); };
  EXPECT_EQ(format_of("notes.jsonl"), SourceFormat::text_jsonl);
  EXPECT_EQ(format_of("alpaca.jsonl"), SourceFormat::alpaca);
  EXPECT_EQ(format_of("sharegpt.jsonl"), SourceFormat::sharegpt);
  EXPECT_EQ(format_of("essays.txt"), SourceFormat::txt);
}

TEST(DataPacking, TextJsonlWindowsAreExactAndLoseNoToken) {
  const std::vector<std::string> docs{
      "The lighthouse keeper counted the ships that passed before dawn.",
      "Rain fell on the orchard, and the apples grew heavy on their branches.", "A short one.",
      "Seven bakers argued about bread until the ovens went cold, then laughed and began again."};
  int64_t one_epoch = 0;
  for (const auto& d : docs) one_epoch += static_cast<int64_t>(kjv_tokenizer().encode(d, true, true).size());
  const int64_t windows = 2 * one_epoch / 16 + 1;  // more than two epochs of this small file
  DataStream stream(one_source(fixture("notes.jsonl"), 16), &kjv_tokenizer());
  const auto batch = stream.next_batch(windows);
  EXPECT_EQ(batch.sizes(), (std::vector<int64_t>{windows, 16}));
  EXPECT_EQ(batch.scalar_type(), torch::kInt64);
  const std::vector<int64_t> got(batch.data_ptr<int64_t>(), batch.data_ptr<int64_t>() + batch.numel());
  EXPECT_EQ(got, expected_stream(docs, got.size()));
  EXPECT_GE(stream.stats().sources[0].epoch, 1);
}

TEST(DataPacking, CustomTextFieldTxtAlpacaShareGpt) {
  auto config = one_source(fixture("fields.jsonl"), 8);
  config.sources[0].text_field = "body";
  DataStream fields(config, &kjv_tokenizer());
  EXPECT_EQ(take_tokens(fields, 4),
            expected_stream(
                {"Copper kettles hum when the water is nearly ready.", "Foxes keep to the hedges in winter."}, 32));
  DataStream txt(one_source(fixture("essays.txt"), 8), &kjv_tokenizer());
  EXPECT_EQ(take_tokens(txt, 5),
            expected_stream({"The river bends twice before the mill.\nMoss grows on its "
                             "northern stones.",
                             "In autumn the geese leave in long lines.", "Last paragraph, with no trailing newline."},
                            40));
  DataStream alpaca(one_source(fixture("alpaca.jsonl"), 8), &kjv_tokenizer());
  EXPECT_EQ(take_tokens(alpaca, 2), expected_stream({"### Instruction:\nName a colour found in a rainbow.\n\n"
                                                     "### Response:\nGreen."},
                                                    16));
  DataStream chat(one_source(fixture("sharegpt.jsonl"), 8), &kjv_tokenizer());
  const auto& tok = kjv_tokenizer();
  auto first = tok.encode(
      "[INST] <<SYS>>\nYou answer briefly.\n<</SYS>>\n\nWhat is the capital of Peru? [/INST] Lima. ", true, true);
  const auto second = tok.encode("[INST] And of Chile? [/INST] Santiago. ", true, true);
  first.insert(first.end(), second.begin(), second.end());
  const auto got = take_tokens(chat, 1 + static_cast<int64_t>(first.size()) / 8);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), got.begin()));
}

TEST(DataPacking, WithoutBosEosDocumentsAreJustConcatenated) {
  auto config = one_source(fixture("fields.jsonl"), 4);
  config.sources[0].text_field = "body";
  config.add_bos = config.add_eos = false;
  DataStream stream(config, &kjv_tokenizer());
  auto expected = kjv_tokenizer().encode("Copper kettles hum when the water is nearly ready.");
  const auto got = take_tokens(stream, 2);
  EXPECT_TRUE(std::equal(got.begin(), got.end(), expected.begin()));
}

TEST(DataErrors, MalformedLinesAreCountedOrFatalWhenStrict) {
  DataStream lenient(one_source(fixture("malformed.jsonl"), 4), &kjv_tokenizer());
  lenient.next_batch(8);  // well past one epoch of the two good records
  EXPECT_EQ(lenient.stats().sources[0].malformed % 3, 0);
  EXPECT_GE(lenient.stats().sources[0].malformed, 3);
  auto strict = one_source(fixture("malformed.jsonl"), 4);
  strict.strict = true;
  // Line 1 is fine, so construction succeeds; reaching line 2 is fatal, naming file and line.
  DataStream s(strict, &kjv_tokenizer());
  EXPECT_EQ(error_of([&] { s.next_batch(8); }), fixture("malformed.jsonl") + ":2: missing field 'text'");
  strict.sources[0].path = fixture("malformed_first.jsonl");  // a broken first record fails at construction
  strict.sources[0].format = SourceFormat::text_jsonl;
  EXPECT_EQ(error_of([&] { DataStream t(strict, &kjv_tokenizer()); }),
            fixture("malformed_first.jsonl") + ":1: invalid JSON");
}

TEST(DataErrors, MissingEmptyAndTooShortSources) {
  EXPECT_EQ(error_of([&] { DataStream s(one_source(fixture("nope.jsonl"), 8), &kjv_tokenizer()); }),
            fixture("nope.jsonl") + ": data source not found");
  auto empty = one_source(fixture("empty.jsonl"), 8);
  empty.sources[0].format = SourceFormat::text_jsonl;
  EXPECT_NE(error_of([&] { DataStream s(empty, &kjv_tokenizer()); }).find("empty.jsonl: no documents"),
            std::string::npos);
  EXPECT_NE(error_of([&] { DataStream s(one_source(fixture("empty.jsonl"), 8), &kjv_tokenizer()); }).find("empty"),
            std::string::npos);
  EXPECT_NE(error_of([&] { DataStream s(one_source(fixture("blank.txt"), 8), &kjv_tokenizer()); }).find("no documents"),
            std::string::npos);
  const auto u16 = qkd::test::kjv_val_tokens();
  EXPECT_NE(error_of([&] { DataStream s(one_source(u16, 100000), nullptr); }).find("fewer than one window"),
            std::string::npos);
  EXPECT_NE(error_of([&] { DataStream s(one_source(fixture("notes.jsonl"), 8), nullptr); }).find("needs a tokenizer"),
            std::string::npos);
}

// The marks packed windows carry for data.document_mask and kd.ce_on: where each document starts and
// which tokens are prompt, checked against the records tokenized one by one.
TEST(DataMarks, AlpacaWindowsMarkDocumentStartsAndPrompts) {
  const auto& tok = kjv_tokenizer();
  const std::vector<std::pair<std::string, std::string>> records{
      {"### Instruction:\nName a colour found in a rainbow.\n\n### Response:\n", "Green."},
      {"### Instruction:\nAdd the two numbers.\n\n### Input:\n4 and 9\n\n### Response:\n", "13"},
      {"### Instruction:\nTranslate to French.\n\n### Input:\ngood morning\n\n### Response:\n", "bonjour"}};
  std::vector<int64_t> ids;
  std::vector<uint8_t> marks;
  for (const auto& [prompt, response] : records) {
    const auto whole = tok.encode(prompt + response, true, true);
    const auto prompt_ids = tok.encode(prompt, true, false);
    ASSERT_TRUE(std::equal(prompt_ids.begin(), prompt_ids.end(), whole.begin()));  // the prompt is a prefix
    for (size_t i = 0; i < whole.size(); ++i) {
      ids.push_back(whole[i]);
      marks.push_back((i == 0 ? qkd::data::kDocumentStart : 0) | (i < prompt_ids.size() ? qkd::data::kPromptToken : 0));
    }
  }
  const int64_t seq = 8, windows = static_cast<int64_t>(ids.size()) / seq;
  DataStream stream(one_source(fixture("alpaca.jsonl"), seq), &tok);
  const auto batch = stream.next_marked_batch(windows);
  const auto n = static_cast<size_t>(batch.input_ids.numel());
  EXPECT_EQ(std::vector<int64_t>(batch.input_ids.data_ptr<int64_t>(), batch.input_ids.data_ptr<int64_t>() + n),
            std::vector<int64_t>(ids.begin(), ids.begin() + n));
  EXPECT_EQ(std::vector<uint8_t>(batch.marks.data_ptr<uint8_t>(), batch.marks.data_ptr<uint8_t>() + n),
            std::vector<uint8_t>(marks.begin(), marks.begin() + n));
  EXPECT_GT(batch.prompt_tokens().logical_not().sum().item<int64_t>(), 0);  // responses exist
}

TEST(DataMarks, ShareGptPromptsAreTheUserTurnsOfEveryPair) {
  const auto& tok = kjv_tokenizer();
  DataStream chat(one_source(fixture("sharegpt.jsonl"), 128), &tok);
  const auto batch = chat.next_marked_batch(1);
  const auto first_prompt = tok.encode("[INST] <<SYS>>\nYou answer briefly.\n<</SYS>>\n\nWhat is the capital of Peru? [/INST]", true, false);
  const auto first_pair = tok.encode(
      "[INST] <<SYS>>\nYou answer briefly.\n<</SYS>>\n\nWhat is the capital of Peru? [/INST] Lima. ", true, true);
  const auto second_prompt = tok.encode("[INST] And of Chile? [/INST]", true, false);
  const auto prompt = batch.prompt_tokens()[0];
  const auto p = static_cast<int64_t>(first_prompt.size()), pair = static_cast<int64_t>(first_pair.size());
  EXPECT_TRUE(prompt.narrow(0, 0, p).all().item<bool>());
  EXPECT_FALSE(prompt.narrow(0, p, pair - p).any().item<bool>());  // "Lima. </s>" is the response
  // The second pair continues the conversation: its BOS is a prompt token but starts no document.
  EXPECT_TRUE(prompt.narrow(0, pair, static_cast<int64_t>(second_prompt.size())).all().item<bool>());
  EXPECT_FALSE(batch.document_starts()[0][pair].item<bool>());
  EXPECT_TRUE(batch.document_starts()[0][0].item<bool>());
}

TEST(DataMarks, TokenFileDocumentsStartAtEachBos) {
  auto config = one_source(qkd::test::kjv_val_tokens(), 256);
  config.document_mask = true;
  DataStream stream(config, &kjv_tokenizer());
  const auto batch = stream.next_marked_batch(4);
  EXPECT_TRUE(torch::equal(batch.document_starts(), batch.input_ids.eq(kjv_tokenizer().special().bos)));
  EXPECT_GT(batch.document_starts().sum().item<int64_t>(), 0);
  EXPECT_NE(error_of([&] { DataStream no_tokenizer(config, nullptr); }).find("data.document_mask"), std::string::npos);
}

TEST(DataMarks, ResumedStreamRepeatsTheMarks) {
  auto config = one_source(fixture("sharegpt.jsonl"), 16, /*shuffle=*/true);
  config.shuffle_buffer = 4;
  DataStream straight(config, &kjv_tokenizer());
  straight.next_marked_batch(3);
  const auto cursor = nlohmann::json::parse(straight.cursor().dump());
  const auto expected = straight.next_marked_batch(5);
  DataStream resumed(config, &kjv_tokenizer());
  resumed.restore(cursor);
  const auto got = resumed.next_marked_batch(5);
  EXPECT_TRUE(torch::equal(got.input_ids, expected.input_ids));
  EXPECT_TRUE(torch::equal(got.marks, expected.marks));
}
