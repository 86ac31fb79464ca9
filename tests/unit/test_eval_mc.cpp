// Multiple-choice scoring: the lm-eval continuation split on the real tokenizer, batching, acc and
// acc_norm selection, and the native dataset formats from tests/fixtures/mc.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iostream>

#include "qkd/common/error.h"
#include "qkd/eval/multiple_choice.h"
#include "qkd/tokenizer/tokenizer.h"
#include "test_support.h"

using namespace qkd;
using namespace qkd::eval;

namespace {

constexpr int64_t kVocab = 4096;

std::string kjv(const std::string& name) { return test::repo_path("assets/data/kjv/" + name); }
std::string fixture(const std::string& name) { return test::repo_path("tests/fixtures/mc/") + name; }

const tokenizer::Tokenizer& kjv_tokenizer() {
  static const tokenizer::Tokenizer tok(kjv("tokenizer.model"));
  return tok;
}

LogitsFn uniform_logits() {
  return [](const torch::Tensor& ids) { return torch::zeros({ids.size(0), ids.size(1), kVocab}); };
}

// Puts logit +20 on the next token of `preferred` wherever a row so far equals its prefix, so that
// sequence scores close to 0 and any other continuation pays ~20 nats where it departs from it.
LogitsFn prefer_sequence(std::vector<int64_t> preferred) {
  return [preferred](const torch::Tensor& ids) {
    auto logits = torch::zeros({ids.size(0), ids.size(1), kVocab});
    const auto a = ids.accessor<int64_t, 2>();
    for (int64_t row = 0; row < ids.size(0); ++row) {
      for (int64_t t = 0; t < ids.size(1) && t + 1 < static_cast<int64_t>(preferred.size()); ++t) {
        if (a[row][t] != preferred[t]) break;
        logits[row][t][preferred[t + 1]] = 20.0;
      }
    }
    return logits;
  };
}

std::vector<int64_t> full_sequence(const std::string& context, const std::string& continuation) {
  const auto split = split_continuation(kjv_tokenizer(), context, continuation);
  std::vector<int64_t> seq{kjv_tokenizer().special().bos};
  seq.insert(seq.end(), split.context.begin(), split.context.end());
  seq.insert(seq.end(), split.continuation.begin(), split.continuation.end());
  return seq;
}

McItem item_of(const std::string& context, const std::vector<std::string>& choices, int64_t label) {
  McItem item;
  item.label = label;
  for (const auto& c : choices) item.choices.push_back({context, c, static_cast<int64_t>(c.size())});
  return item;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(EvalMcSplit, ContinuationIsTheWholeEncodingAfterTheContext) {
  const auto& tok = kjv_tokenizer();
  const std::string context = "And God said,", choice = " Let there be light";
  const auto split = split_continuation(tok, context, choice);
  const auto ctx = tok.encode(context);
  const auto whole = tok.encode(context + choice);
  EXPECT_EQ(split.context, ctx);
  ASSERT_GT(whole.size(), ctx.size());
  EXPECT_EQ(split.continuation, std::vector<int64_t>(whole.begin() + ctx.size(), whole.end()));
  EXPECT_EQ(std::vector<int64_t>(whole.begin(), whole.begin() + ctx.size()), ctx);
  EXPECT_EQ(tok.decode(split.continuation), "Let there be light");
}

TEST(EvalMcSplit, TrailingContextSpaceMovesToTheContinuation) {
  const auto a = split_continuation(kjv_tokenizer(), "And God said, ", "Let there be light");
  const auto b = split_continuation(kjv_tokenizer(), "And God said,", " Let there be light");
  EXPECT_EQ(a.context, b.context);
  EXPECT_EQ(a.continuation, b.continuation);
}

TEST(EvalMcSplit, SequenceIsBosContextContinuationShiftedAndLeftTruncated) {
  ContinuationSplit split{{10, 11, 12}, {20, 21}};
  auto seq = build_scored_sequence(split, 1, 256);
  EXPECT_EQ(seq.input, (std::vector<int64_t>{1, 10, 11, 12, 20}));
  EXPECT_EQ(seq.target, (std::vector<int64_t>{10, 11, 12, 20, 21}));
  EXPECT_EQ(seq.scored, 2);
  seq = build_scored_sequence(split, 1, 3);  // keep the end
  EXPECT_EQ(seq.input, (std::vector<int64_t>{11, 12, 20}));
  EXPECT_EQ(seq.target, (std::vector<int64_t>{12, 20, 21}));
  EXPECT_EQ(seq.scored, 2);
  seq = build_scored_sequence(split, 1, 1);  // truncation cuts into the continuation
  EXPECT_EQ(seq.input, (std::vector<int64_t>{20}));
  EXPECT_EQ(seq.scored, 1);
}

TEST(EvalMcScore, ScoresComeBackInInputOrderWhateverTheBatching) {
  std::vector<ScoredSequence> seqs;
  for (const char* choice :
       {" Let there be light", " and it was so", " a", " and God saw the light, that it was good"}) {
    seqs.push_back(build_scored_sequence(split_continuation(kjv_tokenizer(), "And God said,", choice), 1, 256));
  }
  for (int64_t batch : {1, 3, 16}) {
    McOptions options;
    options.batch_size = batch;
    const auto scores = score_sequences(uniform_logits(), seqs, kjv_tokenizer().pad_id(), options);
    for (size_t i = 0; i < seqs.size(); ++i) {
      EXPECT_NEAR(scores[i], -static_cast<double>(seqs[i].scored) * std::log(kVocab), 1e-3) << i;
    }
  }
}

TEST(EvalMcScore, PaddingDoesNotChangeScores) {
  const auto fn = prefer_sequence(full_sequence("And God said,", " Let there be light"));
  std::vector<ScoredSequence> seqs;
  for (const char* choice : {" Let there be light", " Let", " Let there be darkness upon the face of the deep"}) {
    seqs.push_back(build_scored_sequence(split_continuation(kjv_tokenizer(), "And God said,", choice), 1, 256));
  }
  McOptions one, all;
  one.batch_size = 1;
  all.batch_size = 3;
  const auto a = score_sequences(fn, seqs, kjv_tokenizer().pad_id(), one);
  const auto b = score_sequences(fn, seqs, kjv_tokenizer().pad_id(), all);
  for (size_t i = 0; i < seqs.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4) << i;
  EXPECT_GT(a[0], -1e-3);  // the preferred sequence is nearly certain
}

TEST(EvalMcScore, PreferredChoiceWinsAccAndAccNorm) {
  const std::string context = "And God said,";
  const std::vector<std::string> choices{" Let the waters bring forth", " Let there be light", " Behold"};
  const auto fn = prefer_sequence(full_sequence(context, choices[1]));
  McOptions options;
  options.batch_size = 2;
  const auto right = evaluate_multiple_choice(fn, kjv_tokenizer(), {item_of(context, choices, 1)}, options);
  EXPECT_EQ(right.n, 1);
  EXPECT_EQ(right.acc, 1.0);
  EXPECT_EQ(right.acc_norm, 1.0);
  const auto wrong = evaluate_multiple_choice(fn, kjv_tokenizer(), {item_of(context, choices, 2)}, options);
  EXPECT_EQ(wrong.acc, 0.0);
  EXPECT_EQ(wrong.acc_norm, 0.0);
}

TEST(EvalMcScore, AccNormDividesByUtf8Bytes) {
  // Sums favour choice 1; per byte choice 0 is better (-5/10 > -2/2).
  std::vector<McItem> items{item_of("c", {"0123456789", "01"}, 0)};
  auto r = accuracy_from_scores(items, {-5.0, -2.0});
  EXPECT_EQ(r.acc, 0.0);
  EXPECT_EQ(r.acc_norm, 1.0);
  // Ties go to the first choice, as numpy's argmax.
  r = accuracy_from_scores({item_of("c", {"ab", "cd"}, 0)}, {-1.0, -1.0});
  EXPECT_EQ(r.acc, 1.0);
  // "é" is two bytes: the generic parser must count bytes, not characters.
  const auto item = mc_item_from_record(
      nlohmann::json::parse(R"({"context": "x", "choices": [" \u00e9", " e"], "label": 0})"), McFormat::generic, "f:1");
  EXPECT_EQ(item.choices[0].norm_bytes, 3);
  EXPECT_EQ(item.choices[1].norm_bytes, 2);
}

TEST(EvalMcScore, UniformLogitsPickFewestTokensForAccAndFewestTokensPerByteForAccNorm) {
  const auto& tok = kjv_tokenizer();
  const std::string context = "And God said,";
  const std::vector<std::string> choices{" Zzq", " and the evening and the morning were the first day"};
  std::vector<double> tokens, per_byte;
  for (const auto& c : choices) {
    tokens.push_back(split_continuation(tok, context, c).continuation.size());
    per_byte.push_back(tokens.back() / c.size());
  }
  ASSERT_LT(tokens[0], tokens[1]);      // acc prefers choice 0 ...
  ASSERT_GT(per_byte[0], per_byte[1]);  // ... acc_norm choice 1
  const auto r = evaluate_multiple_choice(uniform_logits(), tok, {item_of(context, choices, 1)}, McOptions{});
  EXPECT_EQ(r.acc, 0.0);
  EXPECT_EQ(r.acc_norm, 1.0);
}

TEST(EvalMcFormats, GenericFixture) {
  const auto d = load_mc_file(fixture("generic.jsonl"));
  EXPECT_EQ(d.format, McFormat::generic);
  ASSERT_EQ(d.items.size(), 3u);  // the blank line is skipped
  EXPECT_EQ(d.items[2].line, 4);
  EXPECT_EQ(d.items[1].label, 1);
  EXPECT_EQ(d.items[0].choices[0].context, "The baker opened the oven and");
  EXPECT_EQ(d.items[0].choices[0].continuation, " took out the bread.");
}

TEST(EvalMcFormats, HellaswagFixtureIsPreprocessedLikeLmEval) {
  const auto d = load_mc_file(fixture("hellaswag.jsonl"));
  EXPECT_EQ(d.format, McFormat::hellaswag);
  ASSERT_EQ(d.items.size(), 2u);
  const auto& a = d.items[0];
  EXPECT_EQ(a.label, 0);
  ASSERT_EQ(a.choices.size(), 4u);
  EXPECT_EQ(a.choices[0].context, "Baking cookies: A woman places a tray of dough balls on the counter. The woman");
  EXPECT_EQ(a.choices[0].continuation, " slides the tray into the oven.");
  EXPECT_EQ(a.choices[0].norm_bytes, 30);
  const auto& b = d.items[1];
  EXPECT_EQ(b.choices[0].context,
            "Home and Garden: How to repot a fern. Pick a larger pot. Choose one a few inches wider.");
  EXPECT_EQ(b.choices[0].continuation, "  Fill the bottom with fresh soil.");  // strip runs before "[...]" removal
  EXPECT_EQ(b.choices[3].continuation, " Cover the fern with sand. and wait.");
  EXPECT_EQ(hellaswag_preprocess(" a [x\n] b "), "a [x\n] b");  // '.' does not match a newline
}

TEST(EvalMcFormats, PiqaFixture) {
  const auto d = load_mc_file(fixture("piqa.jsonl"));
  EXPECT_EQ(d.format, McFormat::piqa);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[0].choices[0].context, "Question: How do you keep a cut apple from turning brown?\nAnswer:");
  EXPECT_EQ(d.items[0].choices[1].continuation, " Leave the slices in the sun.");
  EXPECT_EQ(d.items[1].label, 1);
}

TEST(EvalMcFormats, ArcFixture) {
  const auto d = load_mc_file(fixture("arc.jsonl"));
  EXPECT_EQ(d.format, McFormat::arc);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[0].label, 1);  // "B"
  EXPECT_EQ(d.items[0].choices[1].context, "Question: Which of these is a source of light?\nAnswer:");
  EXPECT_EQ(d.items[0].choices[1].continuation, " the Sun");
  EXPECT_EQ(d.items[1].label, 2);  // "3" among "1", "2", "3"
  EXPECT_EQ(d.items[1].choices.size(), 3u);
}

TEST(EvalMcFormats, WinograndeFixtureVariesTheContext) {
  const auto d = load_mc_file(fixture("winogrande.jsonl"));
  EXPECT_EQ(d.format, McFormat::winogrande);
  ASSERT_EQ(d.items.size(), 2u);
  const auto& c = d.items[0].choices;
  EXPECT_EQ(d.items[0].label, 1);
  EXPECT_EQ(c[0].context, "Maria lent her umbrella to Kate because Maria");
  EXPECT_EQ(c[1].context, "Maria lent her umbrella to Kate because Kate");
  EXPECT_EQ(c[0].continuation, " was going out in the rain.");
  EXPECT_EQ(c[1].continuation, c[0].continuation);
}

TEST(EvalMcFormats, BoolqFixtureTakesLabelOrAnswer) {
  const auto d = load_mc_file(fixture("boolq.jsonl"));
  EXPECT_EQ(d.format, McFormat::boolq);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[0].label, 1);
  EXPECT_EQ(d.items[1].label, 0);  // "answer": false
  EXPECT_EQ(d.items[1].choices[0].context,
            "Penguins are seabirds whose wings have become flippers suited to swimming rather than flight.\n"
            "Question: can penguins fly?\nAnswer:");
  EXPECT_EQ(d.items[1].choices[0].continuation, " no");
  EXPECT_EQ(d.items[1].choices[1].continuation, " yes");
}

TEST(EvalMcFormats, OpenBookQaFixture) {
  const auto d = load_mc_file(fixture("openbookqa.jsonl"));
  EXPECT_EQ(d.format, McFormat::openbookqa);
  ASSERT_EQ(d.items.size(), 2u);
  EXPECT_EQ(d.items[1].label, 1);
  EXPECT_EQ(d.items[1].choices[1].context, "Ice turning into water is an example of");
  EXPECT_EQ(d.items[1].choices[1].continuation, " melting");
}

TEST(EvalMcFormats, ExplicitFormatOverridesDetection) {
  EXPECT_EQ(parse_mc_format("piqa"), McFormat::piqa);
  EXPECT_THROW(parse_mc_format("squad"), Error);
  const auto where = fixture("piqa.jsonl") + ":1";
  EXPECT_EQ(error_of([&] { load_mc_file(fixture("piqa.jsonl"), McFormat::arc); }),
            where + ": missing field \"question\"");
}

TEST(EvalMcFormats, KjvClozeLoads) {
  const auto d = load_mc_file(kjv("kjv-cloze-val.jsonl"));
  EXPECT_EQ(d.format, McFormat::generic);
  ASSERT_EQ(d.items.size(), 1000u);
  for (const auto& item : d.items) ASSERT_EQ(item.choices.size(), 4u);
  // lm-eval feeds tokens(context) + continuation; reading the README as <s> + tokens(context + choice)
  // gives the same inputs exactly when tokens(context) is a prefix of tokens(context + choice).
  int64_t boundary_merges = 0;
  for (const auto& item : d.items) {
    for (const auto& c : item.choices) {
      const auto ctx = kjv_tokenizer().encode(c.context);
      const auto whole = kjv_tokenizer().encode(c.context + c.continuation);
      boundary_merges += whole.size() < ctx.size() || !std::equal(ctx.begin(), ctx.end(), whole.begin());
    }
  }
  std::cout << "[ INFO     ] kjv-cloze requests whose context tokens change with the choice: " << boundary_merges
            << "\n";
  McOptions options;
  options.max_items = 10;
  const auto r = evaluate_multiple_choice_file(uniform_logits(), kjv_tokenizer(), kjv("kjv-cloze-val.jsonl"), options);
  EXPECT_EQ(r.n, 10);
}

TEST(EvalMcFormats, BadInputsNameFileAndLine) {
  const auto dir = test::scratch_dir("eval-mc");
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string good = R"({"context": "a", "choices": [" b", " c", " d", " e"], "label": 0})";
  auto path =
      write("label.jsonl", good + "\n" + R"({"context": "a", "choices": [" b", " c", " d", " e"], "label": 5})");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }), path + ":2: label 5 out of range for 4 choices");
  path = write("json.jsonl", good + "\n" + good + "\n{\"context\": \n");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }).rfind(path + ":3: bad JSON", 0), 0u);
  path = write("missing.jsonl", good + "\n" + R"({"context": "a", "label": 0})");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }), path + ":2: missing field \"choices\"");
  path = write("unknown.jsonl", R"({"prompt": "a"})");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }).rfind(path + ":1: cannot tell", 0), 0u);
  path = write("wino.jsonl", R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }), path + ":1: sentence has no \"_\" blank");
  path = write("arc.jsonl",
               R"({"question": "q", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "E"})");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }), path + ":1: answerKey \"E\" is not among the choice labels");
  path = write("empty.jsonl", "\n");
  EXPECT_EQ(error_of([&] { load_mc_file(path); }), path + ": no multiple-choice items");
  EXPECT_EQ(error_of([&] { load_mc_file(dir + "/nope.jsonl"); }),
            dir + "/nope.jsonl: cannot open: No such file or directory");
}
