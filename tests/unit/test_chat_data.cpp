// Chat records in training data: {"messages": [...]} and sharegpt rendered with the model's own chat
// template (Qwen3's, Llama-3.1's and Mistral-Nemo's from their npm packages), tokenized as
// apply_chat_template(tokenize=True) does, and with kd.ce_on responses exactly the assistant spans
// marked as response; without a template (the KJV sentencepiece model) the LLaMA-2 [INST] form.
#include <gtest/gtest.h>

#include <fstream>

#include "qkd/data/data_stream.h"
#include "qkd/data/record_render.h"
#include "qkd/tokenizer/tokenizer.h"
#include "test_support.h"
#include "tokenizer_fixtures.h"

using namespace qkd;
using nlohmann::ordered_json;

namespace {

ordered_json conversation(bool with_system) {
  ordered_json messages = ordered_json::array();
  if (with_system) messages.push_back({{"role", "system"}, {"content", "You answer in verses."}});
  messages.push_back({{"role", "user"}, {"content", "Who made the heaven?"}});
  messages.push_back({{"role", "assistant"}, {"content", "In the beginning God created the heaven."}});
  messages.push_back({{"role", "user"}, {"content", "And the earth?"}});
  messages.push_back({{"role", "assistant"}, {"content", "And the earth was without form, and void."}});
  return {{"messages", messages}};
}

tokenizer::Tokenizer npm_tokenizer(const std::string& package) {
  return tokenizer::load_tokenizer_for_checkpoint(test::npm_tokenizer_dir(package));
}

// The text of the tokens marked as response, and of the rest.
std::pair<std::string, std::string> split_by_marks(const data::TokenizedRecord& r, const tokenizer::Tokenizer& tok) {
  std::vector<int64_t> response, prompt;
  for (size_t i = 0; i < r.ids.size(); ++i) (r.prompt[i] ? prompt : response).push_back(r.ids[i]);
  return {tok.decode(response, false), tok.decode(prompt, false)};
}

}  // namespace

TEST(ChatData, ResponsesAreExactlyTheAssistantTurnsWithTheirEndOfTurn) {
  for (const auto& [package, end_of_turn] : std::vector<std::pair<std::string, std::string>>{
           {"tokenizer-qwen3", "<|im_end|>"}, {"tokenizer-llama3_1", "<|eot_id|>"}}) {
    const auto tok = npm_tokenizer(package);
    ASSERT_NE(tok.chat_template(), nullptr) << package;
    const auto rendered = data::render_chat_record(conversation(true), tok.chat_template(), true);
    ASSERT_TRUE(rendered.error.empty()) << rendered.error;
    ASSERT_EQ(rendered.segments.size(), 1u);
    const auto& segment = rendered.segments[0];
    EXPECT_EQ(segment.text, tok.chat_template()->render(conversation(true)["messages"])) << package;
    const auto record = data::tokenize_record(rendered.segments, tok);
    // The ids are the rendering tokenized without added special tokens (apply_chat_template's).
    EXPECT_EQ(record.ids, tok.hf()->encode(segment.text, false)) << package;
    const auto [response, prompt] = split_by_marks(record, tok);
    EXPECT_NE(response.find("In the beginning God created the heaven." + end_of_turn), std::string::npos) << response;
    EXPECT_NE(response.find("And the earth was without form, and void." + end_of_turn), std::string::npos) << response;
    EXPECT_EQ(response.find("Who made the heaven?"), std::string::npos) << package << ": a user turn is marked response";
    EXPECT_EQ(response.find("You answer in verses."), std::string::npos) << package << ": the system turn is response";
    EXPECT_NE(prompt.find("And the earth?"), std::string::npos);
    // Control: without the spans every token counts as a response.
    const auto plain = data::render_chat_record(conversation(true), tok.chat_template(), false);
    const auto unmarked = data::tokenize_record(plain.segments, tok);
    EXPECT_EQ(unmarked.ids, record.ids);
    EXPECT_EQ(std::count(unmarked.prompt.begin(), unmarked.prompt.end(), 1), 0);
  }
}

TEST(ChatData, ShareGptMapsOntoMessages) {
  const auto tok = npm_tokenizer("tokenizer-qwen3");
  const ordered_json sharegpt = {{"conversations",
                                  {{{"from", "system"}, {"value", "You answer in verses."}},
                                   {{"from", "human"}, {"value", "Who made the heaven?"}},
                                   {{"from", "gpt"}, {"value", "In the beginning God created the heaven."}},
                                   {{"from", "human"}, {"value", "And the earth?"}},
                                   {{"from", "gpt"}, {"value", "And the earth was without form, and void."}}}}};
  std::string error;
  const auto messages = data::sharegpt_messages(sharegpt, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(messages, conversation(true));
  data::sharegpt_messages({{"conversations", {{{"from", "bot"}, {"value", "x"}}}}}, error);
  EXPECT_NE(error.find("'bot'"), std::string::npos) << error;
}

TEST(ChatData, WithoutATemplateMessagesTakeTheLlama2Form) {
  const tokenizer::Tokenizer kjv(test::repo_path("assets/data/kjv/tokenizer.model"));
  EXPECT_EQ(kjv.chat_template(), nullptr);
  const auto as_chat = data::render_chat_record(conversation(false), nullptr, true);
  ASSERT_TRUE(as_chat.error.empty()) << as_chat.error;
  const auto as_sharegpt = data::render_sharegpt_record(
      {{"conversations",
        {{{"from", "human"}, {"value", "Who made the heaven?"}},
         {{"from", "gpt"}, {"value", "In the beginning God created the heaven."}},
         {{"from", "human"}, {"value", "And the earth?"}},
         {{"from", "gpt"}, {"value", "And the earth was without form, and void."}}}}});
  const auto a = data::tokenize_record(as_chat.segments, kjv), b = data::tokenize_record(as_sharegpt.segments, kjv);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.prompt, b.prompt);
  const auto tool = data::render_chat_record({{"messages", {{{"role", "tool"}, {"content", "42"}}}}}, nullptr, false);
  EXPECT_NE(tool.error.find("role 'tool' needs the model's chat template"), std::string::npos) << tool.error;
}

// Mistral-Nemo's template moves the system prompt into the last user turn, so an earlier assistant turn
// cannot be located: with kd.ce_on responses that record is malformed, naming the message; without the
// need it renders.
TEST(ChatData, ATemplateThatIsNotPrefixStableFailsOnlyWhenResponsesAreNeeded) {
  const auto tok = npm_tokenizer("tokenizer-mistral_nemo");
  const auto needed = data::render_chat_record(conversation(true), tok.chat_template(), true);
  EXPECT_NE(needed.error.find("prefix-stable"), std::string::npos) << needed.error;
  const auto plain = data::render_chat_record(conversation(true), tok.chat_template(), false);
  EXPECT_TRUE(plain.error.empty()) << plain.error;
  EXPECT_FALSE(plain.segments.empty());
}

// Through the stream: a chat JSONL source is detected, rendered with the template, and its marks
// say which tokens are prompt.
TEST(ChatData, ChatSourcesStreamWithTheirMarks) {
  const auto dir = test::scratch_dir("chat-source");
  {
    std::ofstream out(dir + "/chat.jsonl");
    for (int i = 0; i < 20; ++i) out << conversation(i % 2 == 0).dump() << "\n";
  }
  const auto tok = npm_tokenizer("tokenizer-qwen3");
  data::DataConfig config;
  config.sources = {{dir + "/chat.jsonl"}};
  config.seq_len = 64;
  config.shuffle = false;
  config.need_response_spans = true;
  EXPECT_EQ(data::resolve_source_format(config.sources[0]), data::SourceFormat::chat);
  data::DataStream stream(config, &tok);
  const auto batch = stream.next_marked_batch(4);
  const auto prompt = batch.prompt_tokens();
  const int64_t prompt_count = prompt.sum().item<int64_t>();
  EXPECT_GT(prompt_count, 0);
  EXPECT_LT(prompt_count, prompt.numel());
  // Every response token of the first conversation's rendering is unmarked in the stream too.
  const auto rendered = data::render_chat_record(conversation(true), tok.chat_template(), true);
  const auto record = data::tokenize_record(rendered.segments, tok);
  const auto row = batch.input_ids[0];
  for (int64_t i = 0; i < std::min<int64_t>(row.size(0), static_cast<int64_t>(record.ids.size())); ++i) {
    ASSERT_EQ(row[i].item<int64_t>(), record.ids[i]);
    EXPECT_EQ(prompt[0][i].item<bool>(), record.prompt[i] == 1) << "token " << i;
  }
}
