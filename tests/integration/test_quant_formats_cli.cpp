// Weight formats through the binary: an int4 g128 asymmetric student exported as compressed-tensors
// reloads in `eval` to the perplexity it trained to, export says which runtimes load it, fp4 round to
// nearest exports to every format that holds it, and fp4 settings that contradict the format fail at
// config load naming the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::test::repo_path;
using qkd::test::run_cli;
using qkd::test::scratch_dir;

const std::string kVal = "assets/data/kjv/kjv-val.u16";

json read_json(const std::string& path) {
  std::ifstream in(path);
  return json::parse(in);
}

// qkd-train eval's perplexity of `model_args` ("--model DIR [--student DIR]") on the first 8 windows.
double eval_ppl(const std::string& model_args, const std::string& out_json) {
  const auto eval = run_cli("eval " + model_args + " --ppl " + repo_path(kVal) +
                            " --seq-len 256 --max-windows 8 --threads 1 --json " + out_json);
  EXPECT_EQ(eval.exit_code, 0) << eval.output;
  return read_json(out_json).at("ppl").at("kjv-val.u16").get<double>();
}

}  // namespace

TEST(QuantFormatsCli, W4G128AsymmetricPackedReloadsToTheTrainingPerplexity) {
  const auto dir = scratch_dir("packed-g128");
  const auto run = run_cli("--config " + repo_path("configs/tiny-kjv.json") + " --set run_dir=" + dir +
                           "/run --set quant.granularity=per_group --set quant.group_size=128"
                           " --set quant.symmetric=false --set train.steps=4 --set train.threads=1"
                           " --set eval.max_windows=8 --set eval.mc=[] --set eval.baselines=false"
                           " --set 'export.formats=[\"packed\"]' --set export.dtype=float32");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // Served as written by vLLM's int4 kernels (group 128, widths 128/256/768), no rule broken.
  EXPECT_NE(run.output.find("packed: loads as written in: vLLM (compressed-tensors WNA16, Marlin kernel"),
            std::string::npos)
      << run.output;
  EXPECT_EQ(run.output.find("vLLM Machete"), std::string::npos) << run.output;
  const auto qc = read_json(dir + "/run/export/packed/config.json").at("quantization_config");
  EXPECT_EQ(qc.at("config_groups").at("group_0").at("weights").at("symmetric"), false);
  EXPECT_EQ(qc.at("config_groups").at("group_0").at("weights").at("group_size"), 128);
  const double trained =
      read_json(dir + "/run/summary.json").at("final_eval").at("ppl").at("kjv-val.u16").get<double>();
  const double reloaded = eval_ppl("--model " + dir + "/run/export/packed", dir + "/packed.json");
  EXPECT_NEAR(reloaded, trained, 1e-4 * trained) << "packed " << reloaded << " vs trained " << trained;
}

TEST(QuantFormatsCli, Fp4PtqExportsHfPackedAndGgufAndRefusesEncodings) {
  const auto teacher = qkd::test::shipped_teacher();
  for (const std::string format : {"nvfp4", "mxfp4"}) {
    SCOPED_TRACE(format);
    const auto dir = scratch_dir("ptq-" + format);
    const auto ptq = run_cli("ptq --model " + teacher + " --out " + dir + " --quant-format " + format +
                             " --dtype float32 --format hf,packed,gguf");
    ASSERT_EQ(ptq.exit_code, 0) << ptq.output;
    EXPECT_TRUE(fs::is_regular_file(dir + "/gguf/model.gguf"));
    EXPECT_NE(ptq.output.find("projections written with the student's own codes and scales (" + format + ")"),
              std::string::npos)
        << ptq.output;
    // The packed checkpoint and the fp32 hf directory hold the same weights.
    const double hf = eval_ppl("--model " + dir + "/hf", dir + "/hf.json");
    const double packed = eval_ppl("--model " + dir + "/packed", dir + "/packed.json");
    EXPECT_EQ(hf, packed);
    const auto refused =
        run_cli("ptq --model " + teacher + " --out " + dir + "/enc --quant-format " + format + " --format encodings");
    EXPECT_NE(refused.exit_code, 0);
    EXPECT_NE(refused.output.find("quant.format: " + format + " cannot be expressed"), std::string::npos)
        << refused.output;
  }
}

TEST(QuantFormatsCli, Fp4SettingsThatContradictTheFormatFailNamingTheKey) {
  const auto config = "--config " + repo_path("configs/tiny-kjv.json") + " --set run_dir=" + scratch_dir("bad-fp4");
  const std::vector<std::pair<std::string, std::string>> cases = {
      // The main job says per_channel: with an fp4 format that is a contradiction, not a default.
      {" --set quant.format=nvfp4", "quant.granularity: nvfp4 has one scale per 16 input columns (per_group)"},
      {" --set quant.format=mxfp4 --set quant.granularity=per_group --set quant.group_size=128",
       "quant.group_size: mxfp4 fixes the group size at 32, got 128"},
      {" --set quant.format=nvfp4 --set quant.granularity=per_group --set quant.group_size=16 --set quant.bits=3",
       "quant.bits: nvfp4 elements are 4-bit E2M1; got bits 3"},
      {" --set quant.format=mxfp4 --set quant.granularity=per_group --set quant.group_size=32"
       " --set quant.symmetric=false",
       "quant.symmetric: mxfp4 is symmetric"},
      {" --set quant.format=nvfp4 --set quant.granularity=per_group --set quant.group_size=16"
       " --set quant.scale_policy=static",
       "quant.scale_policy: nvfp4 scales are encoded from the weight at every forward (dynamic)"},
      {" --set quant.format=fp6", "quant.format: expected one of int, nvfp4, mxfp4, got \"fp6\""}};
  for (const auto& [flags, message] : cases) {
    const auto result = run_cli(config + flags);
    EXPECT_NE(result.exit_code, 0) << flags;
    EXPECT_NE(result.output.find(message), std::string::npos) << flags << "\n" << result.output;
  }
  const auto gptq =
      run_cli("ptq --model " + qkd::test::shipped_teacher() + " --out " + scratch_dir("gptq-fp4") +
              " --quant-format mxfp4 --method gptq --calib-config " + repo_path("configs/tiny-kjv.json"));
  EXPECT_NE(gptq.exit_code, 0);
  EXPECT_NE(gptq.output.find("--method: gptq solves for an integer grid"), std::string::npos) << gptq.output;
}
