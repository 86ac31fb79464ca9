// The evaluation harness and round-to-nearest PTQ against the independent reference
// (tests/fixtures/reference/quality.json): the teacher row and the W4 per-channel row, through the binary.
#include <gtest/gtest.h>

#include <fstream>

#include "test_support.h"

namespace {

using nlohmann::json;
using qkd::test::repo_path;
using qkd::test::run_cli;
using qkd::test::scratch_dir;

json reference(const std::string& row) {
  json j;
  std::ifstream(qkd::test::fixture_path("reference/quality.json")) >> j;
  return j.at(row);
}

json evaluate(const std::string& extra, const std::string& dir) {
  const auto out = dir + "/eval.json";
  const auto result =
      run_cli("eval --model " + qkd::test::shipped_teacher() + " " + extra + " --ppl " +
              qkd::test::kjv_val_tokens() + " --mc " + repo_path("assets/data/kjv/kjv-cloze-val.jsonl") +
              " --seq-len 256 --batch-size 16 --threads 1 --json " + out);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  json j;
  std::ifstream(out) >> j;
  return j;
}

void expect_matches(const json& got, const json& ref) {
  const double ppl = got.at("ppl").at("kjv-val.u16").get<double>();
  const double ref_ppl = ref.at("kjv-val.u16").get<double>();
  EXPECT_NEAR(ppl, ref_ppl, 0.002 * ref_ppl);
  const auto& mc = got.at("mc").at("kjv-cloze-val.jsonl");
  EXPECT_EQ(mc.at("n").get<int>(), 1000);
  EXPECT_NEAR(mc.at("acc").get<double>(), ref.at("kjv-cloze-val.jsonl")[0].get<double>(), 0.005);
  EXPECT_NEAR(mc.at("acc_norm").get<double>(), ref.at("kjv-cloze-val.jsonl")[1].get<double>(), 0.005);
}

TEST(Quality, TeacherMatchesReference) {
  expect_matches(evaluate("", scratch_dir("quality-teacher")), reference("teacher"));
}

TEST(Quality, RoundToNearestW4PerChannelStudentMatchesReference) {
  const auto dir = scratch_dir("quality-w4");
  const auto ptq = run_cli("ptq --model " + qkd::test::shipped_teacher() + " --out " + dir +
                           "/student --bits 4 --granularity per_channel");
  ASSERT_EQ(ptq.exit_code, 0) << ptq.output;
  expect_matches(evaluate("--student " + dir + "/student", dir), reference("rtn_w4_per_channel_sym"));
}

TEST(Quality, BadInputsNameTheirSource) {
  const auto dir = scratch_dir("quality-bad");
  const auto model = qkd::test::shipped_teacher();
  auto r = run_cli("ptq --model " + model + " --out " + dir + "/s --granularity per_group --group-size 48");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("quant.group_size: 48 does not divide"), std::string::npos) << r.output;
  r = run_cli("ptq --model " + model + " --out " + dir + "/s --bits 9");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("quant.bits"), std::string::npos) << r.output;
  std::ofstream(dir + "/odd.u16") << "abc";
  r = run_cli("eval --model " + model + " --ppl " + dir + "/odd.u16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("odd.u16"), std::string::npos) << r.output;
  std::ofstream(dir + "/mc.jsonl") << "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 0}\n"
                                   << "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 7}\n";
  r = run_cli("eval --model " + model + " --mc " + dir + "/mc.jsonl");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("mc.jsonl:2"), std::string::npos) << r.output;
  std::ofstream(dir + "/missing.jsonl") << "{\"context\": \"a\", \"label\": 0}\n";
  r = run_cli("eval --model " + model + " --mc " + dir + "/missing.jsonl");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("missing.jsonl:1"), std::string::npos) << r.output;
}

}  // namespace
