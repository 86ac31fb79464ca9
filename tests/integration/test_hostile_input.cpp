// Hostile input, round two, through the real binary: outputs that name devices, foreign files or the
// inputs; two runs on one directory; non-finite models and runs; ids beyond the vocabulary; unbounded
// work; checkpoints whose contents were damaged or forged; leftovers; the CLI's own parse errors. Each
// reproducer either exits 1 with one line naming the file and field, or succeeds correctly.
#include <algorithm>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "cli_failures.h"
#include "qkd/io/safetensors.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::test::expect_clean_failure;
using qkd::test::read_file;
using qkd::test::repo_path;
using qkd::test::run_cli;
using qkd::test::scratch_dir;
using qkd::test::two_step_run;
using qkd::test::write_run_config;

const std::string kTeacher = qkd::test::shipped_teacher();
const std::string kVal = qkd::test::kjv_val_tokens();

// A copy of the shipped teacher at <dir>/teacher with `edit` applied to its weights.
std::string teacher_with_weights(const std::string& dir, const std::function<void(qkd::io::NamedTensors&)>& edit) {
  const auto model = dir + "/teacher";
  fs::create_directories(dir);
  fs::copy(kTeacher, model, fs::copy_options::recursive);
  auto tensors = qkd::io::read_safetensors(kTeacher + "/model.safetensors");
  for (auto& [name, t] : tensors) t = t.clone();  // views of the mapped file otherwise
  edit(tensors);
  fs::remove(model + "/model.safetensors");
  qkd::io::write_safetensors(model + "/model.safetensors", tensors);
  return model;
}

torch::Tensor& tensor_named(qkd::io::NamedTensors& tensors, const std::string& name) {
  for (auto& [n, t] : tensors)
    if (n == name) return t;
  throw std::runtime_error("no tensor " + name);
}

const std::string kQProj = "model.layers.1.self_attn.q_proj.weight";

// ---- 1. Outputs: created fresh, or replaced only when they are the tool's own output of that kind.

TEST(HostileOutput, PtqRefusesADeviceAFileAForeignDirectoryAndItsOwnModel) {
  const auto dir = scratch_dir("ptq-out");
  const auto ptq = [&](const std::string& out) { return run_cli("ptq --model " + kTeacher + " --out " + out, "", 120); };
  struct stat st {};
  expect_clean_failure(ptq("/dev/full"), "/dev/full", "not a directory");
  ASSERT_EQ(::stat("/dev/full", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << "/dev/full is no longer a device";

  std::ofstream(dir + "/file") << "mine";
  expect_clean_failure(ptq(dir + "/file"), dir + "/file", "not a directory");
  EXPECT_EQ(read_file(dir + "/file"), "mine");

  fs::create_directories(dir + "/foreign");
  std::ofstream(dir + "/foreign/notes.txt") << "mine";
  expect_clean_failure(ptq(dir + "/foreign"), dir + "/foreign", ".qkd-train-output.json");
  EXPECT_EQ(read_file(dir + "/foreign/notes.txt"), "mine");

  const auto before = read_file(kTeacher + "/config.json");
  expect_clean_failure(ptq(kTeacher), "--out", "--model");
  EXPECT_EQ(read_file(kTeacher + "/config.json"), before);
  EXPECT_TRUE(fs::exists(kTeacher + "/tokenizer.model"));

  // Its own earlier output is replaced (a second ptq into the same directory), and only that.
  ASSERT_EQ(ptq(dir + "/student").exit_code, 0);
  const auto again = ptq(dir + "/student");
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(fs::exists(dir + "/student/.qkd-train-output.json"));
}

TEST(HostileOutput, ExportKeepsForeignFilesInAFormatDirectory) {
  const auto dir = scratch_dir("export-out");
  const auto config = write_run_config(dir, "c.json", two_step_run(dir + "/run"));
  ASSERT_EQ(run_cli("--config " + config, "", 120).exit_code, 0);
  fs::create_directories(dir + "/out/hf");
  std::ofstream(dir + "/out/hf/notes.txt") << "mine";
  const auto r = run_cli("export --checkpoint " + dir + "/run --format hf,packed --out " + dir + "/out", "", 120);
  expect_clean_failure(r, dir + "/out/hf", ".qkd-train-output.json");
  EXPECT_EQ(read_file(dir + "/out/hf/notes.txt"), "mine");
  EXPECT_FALSE(fs::exists(dir + "/out/packed")) << "wrote one format before refusing another";
  // Into the run directory it reads from: refused, naming --out.
  expect_clean_failure(run_cli("export --checkpoint " + dir + "/run --out " + dir, "", 60), "--out", "--checkpoint");
}

// ---- 2. One writer per run directory; a crash releases the lock.

TEST(HostileRunDirectory, ASecondRunOnTheSameDirectoryIsRefusedAndACrashReleasesTheLock) {
  const auto dir = scratch_dir("two-runs");
  auto config = two_step_run(dir + "/run");
  config["train"]["steps"] = 400;
  const auto first_config = write_run_config(dir, "first.json", config);
  config["optim"] = {{"lr", 1e-2}};
  const auto second_config = write_run_config(dir, "second.json", config);
  const pid_t first = qkd::test::start_cli({"--config", first_config}, dir + "/first.log");
  for (int i = 0; i < 3000 && !fs::exists(dir + "/run/checkpoints/step-00000001"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoints/step-00000001")) << read_file(dir + "/first.log");
  const auto second = run_cli("--config " + second_config, "", 60);
  expect_clean_failure(second, dir + "/run", "process " + std::to_string(first));
  ::kill(first, SIGKILL);
  ::waitpid(first, nullptr, 0);
  // The kernel dropped the dead process's lock: the first run resumes.
  config["train"]["steps"] = 3;
  config.erase("optim");
  const auto resumed = run_cli("--config " + write_run_config(dir, "resume.json", config), "", 120);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.output;
}

// ---- 4. Non-finite models and runs stop with exit 1 naming what went non-finite.

TEST(HostileNumbers, NonFiniteOrIntegerTeacherWeightsAreRefusedNamingTheTensor) {
  const auto dir = scratch_dir("nan-teacher");
  const auto nan = teacher_with_weights(dir + "/nan", [](auto& t) { tensor_named(t, kQProj)[3][5] = NAN; });
  const auto r = run_cli("eval --model " + nan + " --ppl " + kVal + " --seq-len 32 --max-windows 1", "", 60);
  expect_clean_failure(r, nan + "/model.safetensors", kQProj);
  EXPECT_NE(r.output.find("NaN or Inf"), std::string::npos) << r.output;
  expect_clean_failure(run_cli("ptq --model " + nan + " --out " + dir + "/nan-student", "", 60), kQProj);

  const auto integer = teacher_with_weights(dir + "/i16", [](auto& t) {
    auto& q = tensor_named(t, kQProj);
    q = (q.to(torch::kFloat) * 1000).to(torch::kShort);
  });
  expect_clean_failure(run_cli("eval --model " + integer + " --ppl " + kVal + " --seq-len 32 --max-windows 1", "", 60),
                       kQProj, "not floating point");
}

TEST(HostileNumbers, ARotaryBaseOfAlmostZeroIsRefused) {
  const auto dir = scratch_dir("rope-theta");
  fs::copy(kTeacher, dir + "/teacher", fs::copy_options::recursive);
  auto config = json::parse(read_file(dir + "/teacher/config.json"));
  config["rope_theta"] = 1e-300;
  std::ofstream(dir + "/teacher/config.json") << config.dump();
  expect_clean_failure(run_cli("eval --model " + dir + "/teacher --ppl " + kVal + " --seq-len 32", "", 60),
                       dir + "/teacher/config.json", "rope_theta");
}

TEST(HostileNumbers, ARunThatOnlyDivergesStopsNamingTheSteps) {
  const auto dir = scratch_dir("lr-1e30");
  auto config = two_step_run(dir + "/run");
  config["train"]["steps"] = 30;
  config["optim"] = {{"lr", 1e30}};
  config["checkpoint"] = {{"interval", 0}};
  const auto r = run_cli("--config " + write_run_config(dir, "c.json", config), "", 300);
  expect_clean_failure(r, "train", "non-finite");
  EXPECT_FALSE(fs::exists(dir + "/run/summary.json")) << "a diverged run reported itself finished";
}

// ---- 5. Ids beyond the model's vocabulary name the file before they reach the embedding.

TEST(HostileIds, IdsBeyondTheModelsVocabularyNameTheFile) {
  const auto dir = scratch_dir("ids");
  // A .u16 file read as u32 pairs two ids into one beyond the vocabulary.
  auto config = two_step_run(dir + "/run");
  config["data"]["sources"] = {{{"path", repo_path("assets/data/kjv/kjv-train.u16")}, {"format", "u32"}}};
  expect_clean_failure(run_cli("--config " + write_run_config(dir, "u32.json", config), "", 60),
                       repo_path("assets/data/kjv/kjv-train.u16"));

  const auto calib = dir + "/calib.u16";
  {
    std::ofstream out(calib, std::ios::binary);
    for (int i = 0; i < 600; ++i) {
      const uint16_t id = i == 100 ? 65535 : 17;  // inside the two windows read
      out.write(reinterpret_cast<const char*>(&id), 2);
    }
  }
  expect_clean_failure(
      run_cli("ptq --model " + kTeacher + " --out " + dir + "/gptq --method gptq --calib-file " + calib +
                  " --calib-batches 2 --calib-seq-len 64",
              "", 120),
      calib, "65535");

  for (const int64_t id : {int64_t{5000}, int64_t{-3}}) {
    const auto input = dir + "/ids" + std::to_string(id) + ".safetensors";
    qkd::io::write_safetensors(input, {{"input_ids_0", torch::tensor({{int64_t{1}, id, int64_t{7}}})}});
    expect_clean_failure(run_cli("logits --model " + kTeacher + " --input " + input + " --output " + dir + "/l.st", "", 60),
                         input, "input_ids_0");
  }
}

TEST(HostileIds, AConfigVocabularySmallerThanTheTokenizersIsRefused) {
  const auto dir = scratch_dir("small-vocab");
  fs::copy(kTeacher, dir + "/teacher", fs::copy_options::recursive);
  auto hf = json::parse(read_file(dir + "/teacher/config.json"));
  hf["vocab_size"] = 2048;
  std::ofstream(dir + "/teacher/config.json") << hf.dump();
  auto config = two_step_run(dir + "/run");
  config["teacher"]["path"] = dir + "/teacher";
  expect_clean_failure(run_cli("--config " + write_run_config(dir, "c.json", config), "", 60),
                       dir + "/teacher/config.json", "vocab_size");
}

// ---- 6. Unbounded work is refused naming the setting, before it is allocated.

TEST(HostileSizes, OversizedSettingsAreRefusedNamingTheSetting) {
  const auto dir = scratch_dir("sizes");
  const auto eval = [&](const std::string& extra) {
    return run_cli("eval --model " + kTeacher + " --ppl " + kVal + " --max-windows 1 " + extra, "", 60);
  };
  expect_clean_failure(eval("--threads 100000"), "--threads");
  expect_clean_failure(eval("--batch-size 65536 --seq-len 512"), "--batch-size");

  const auto long_line = dir + "/long.jsonl";
  {
    std::ofstream out(long_line);
    out << "{\"text\": \"" << std::string(17 << 20, 'a') << "\"}\n";
  }
  expect_clean_failure(run_cli("eval --model " + kTeacher + " --ppl " + long_line + " --seq-len 32", "", 60),
                       long_line, "line longer than 16 MiB");

  auto config = two_step_run(dir + "/run");
  config["train"]["micro_batch"] = 100000;
  expect_clean_failure(run_cli("--config " + write_run_config(dir, "mb.json", config), "", 60), "train.micro_batch");
  config = two_step_run(dir + "/run");
  config["data"]["seq_len"] = 100000;
  const auto r = run_cli("--config " + write_run_config(dir, "seq.json", config), "", 60);
  expect_clean_failure(r, "train.micro_batch", "data.seq_len");
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoints"));
}

// ---- 7. Checkpoint contents are verified: checksums, values, step, name, teacher.

// Runs two_step_run to its end and rewrites the config to three steps; returns the config path.
std::string two_steps_then_three(const std::string& dir, json config) {
  const auto path = write_run_config(dir, "c.json", config);
  const auto first = run_cli("--config " + path, "", 120);
  EXPECT_EQ(first.exit_code, 0) << first.output;
  config["train"]["steps"] = 3;
  return write_run_config(dir, "c.json", config);
}

void flip_byte(const std::string& path, size_t from_end) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(-static_cast<std::streamoff>(from_end), std::ios::end);
  char c = 0;
  f.read(&c, 1);
  f.seekp(-static_cast<std::streamoff>(from_end), std::ios::end);
  c = static_cast<char>(c ^ 0x10);
  f.write(&c, 1);
}

TEST(HostileCheckpoint, AFlippedByteFailsItsChecksum) {
  const auto dir = scratch_dir("ckpt-flip");
  const auto config = two_steps_then_three(dir, two_step_run(dir + "/run"));
  const auto student = dir + "/run/checkpoints/step-00000002/student.safetensors";
  flip_byte(student, 100);
  expect_clean_failure(run_cli("--config " + config, "", 60), student, "checksums.json");
}

TEST(HostileCheckpoint, ForgedValuesAndStepsAreRefusedWithoutChecksums) {
  const auto dir = scratch_dir("ckpt-forged");
  const auto config = two_steps_then_three(dir, two_step_run(dir + "/run"));
  const auto ckpt = dir + "/run/checkpoints/step-00000002";
  fs::remove(ckpt + "/checksums.json");  // as a checkpoint forged consistently
  const auto optimizer = ckpt + "/optimizer.safetensors";
  const auto original = read_file(optimizer);
  auto tensors = qkd::io::read_safetensors(optimizer);
  for (auto& [name, t] : tensors) {
    t = t.clone();
    if (name.find("exp_avg_sq") != std::string::npos) t.fill_(-1.0);
  }
  fs::remove(optimizer);
  qkd::io::write_safetensors(optimizer, tensors);
  expect_clean_failure(run_cli("--config " + config, "", 60), optimizer, "second moment");
  std::ofstream(optimizer, std::ios::binary) << original;

  const auto state_path = ckpt + "/state.json";
  auto state = json::parse(read_file(state_path));
  state["step"] = 99;
  std::ofstream(state_path) << state.dump();
  expect_clean_failure(run_cli("--config " + config, "", 60), state_path, "step-00000002");
}

TEST(HostileCheckpoint, ASymlinkedStepIsNotACheckpoint) {
  const auto dir = scratch_dir("ckpt-link");
  const auto config = two_steps_then_three(dir, two_step_run(dir + "/run"));
  fs::create_directory_symlink(dir + "/run/checkpoints/step-00000001", dir + "/run/checkpoints/step-00000009");
  const auto r = run_cli("--config " + config, "", 120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("at step 2"), std::string::npos) << "did not resume from the real newest: " << r.output;
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoints/step-00000003/state.json"));
}

TEST(HostileCheckpoint, ATeacherReplacedAtTheSamePathIsNoticed) {
  const auto dir = scratch_dir("ckpt-teacher");
  fs::copy(kTeacher, dir + "/teacher", fs::copy_options::recursive);
  auto run = two_step_run(dir + "/run");
  run["teacher"]["path"] = dir + "/teacher";
  const auto config = two_steps_then_three(dir, run);
  const auto swapped = teacher_with_weights(dir + "/other", [](auto& t) { tensor_named(t, kQProj).mul_(1.01); });
  fs::remove(dir + "/teacher/model.safetensors");
  fs::copy_file(swapped + "/model.safetensors", dir + "/teacher/model.safetensors");
  expect_clean_failure(run_cli("--config " + config, "", 60), dir + "/run/checkpoints/step-00000002",
                       "another teacher");
}

// ---- 8. Leftovers of killed processes go; a user's files that merely look alike stay.

TEST(HostileLeftovers, StaleExportTemporariesGoAndUserFilesStay) {
  const auto dir = scratch_dir("leftovers2");
  auto config = two_step_run(dir + "/run");
  config["export"] = {{"formats", {"gguf"}}};
  fs::create_directories(dir + "/run/export/.gguf.qkd-tmp-4194305");
  std::ofstream(dir + "/run/export/.gguf.qkd-tmp-4194305/model.gguf") << "partial";
  std::ofstream(dir + "/run/notes.tmp-4000001") << "mine";
  const auto r = run_cli("--config " + write_run_config(dir, "c.json", config), "", 180);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/run/export/.gguf.qkd-tmp-4194305"));
  EXPECT_EQ(read_file(dir + "/run/notes.tmp-4000001"), "mine");
  std::vector<std::string> gguf;
  for (const auto& e : fs::directory_iterator(dir + "/run/export/gguf")) gguf.push_back(e.path().filename().string());
  std::sort(gguf.begin(), gguf.end());
  EXPECT_EQ(gguf, (std::vector<std::string>{".qkd-train-output.json", "model.gguf"}));
}

// ---- 9. The smaller ones.

TEST(HostileCli, ParseErrorsAreOneErrorLine) {
  for (const std::string args : {"--bogus", "train --nope", "eval --seq-len abc --model x --ppl y", "export"}) {
    const auto r = run_cli(args, "", 30);
    EXPECT_EQ(r.exit_code, 1) << args << ": " << r.output;
    EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << args << ": " << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << args << ": " << r.output;
  }
}

TEST(HostileConfig, KeysAreEchoedShortDuplicatesAndNullsRefused) {
  const auto dir = scratch_dir("config-keys");
  auto config = two_step_run(dir + "/run");
  config["train"][std::string(100000, 'k')] = 1;
  const auto r = run_cli("--config " + write_run_config(dir, "long.json", config), "", 60);
  expect_clean_failure(r, "train.kkkk", "unknown key");

  std::ofstream(dir + "/dup.json") << R"({"run_dir": ")" << dir << R"(/run", "teacher": {"path": ")" << kTeacher
                                   << R"("}, "quant": {"bits": 4, "bits": 2}})";
  expect_clean_failure(run_cli("--config " + dir + "/dup.json", "", 60), dir + "/dup.json", "bits");

  config = two_step_run(dir + "/run");
  config["train"]["steps"] = nullptr;
  expect_clean_failure(run_cli("--config " + write_run_config(dir, "null.json", config), "", 60), "train.steps", "null");
}

TEST(HostileConfig, SequencesBeyondTheTrainedPositionsAreWarnedAbout) {
  const auto dir = scratch_dir("positions");
  auto config = two_step_run(dir + "/run");
  config["data"]["seq_len"] = 600;  // the teacher's max_position_embeddings is 512
  config["train"]["micro_batch"] = 1;
  config["train"]["steps"] = 1;
  const auto r = run_cli("--config " + write_run_config(dir, "c.json", config), "", 180);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("data.seq_len 600 is beyond the model's max_position_embeddings 512"), std::string::npos)
      << r.output;
}

TEST(HostileConfig, EvalOfAPlainModelAsAStudentAndGgufWithActivationBitsAreRefused) {
  const auto dir = scratch_dir("student-kinds");
  expect_clean_failure(run_cli("eval --model " + kTeacher + " --student " + kTeacher + " --ppl " + kVal + " --seq-len 32", "", 60), "--student",
                       "not a student");
  auto config = two_step_run(dir + "/run");
  config["quant"] = {{"act_bits", 8}};
  config["export"] = {{"formats", {"gguf"}}};
  const auto r = run_cli("--config " + write_run_config(dir, "c.json", config), "", 60);
  expect_clean_failure(r, "quant.act_bits", "gguf");
  EXPECT_EQ(r.output.find("step 1"), std::string::npos) << "trained before refusing the export: " << r.output;
}

TEST(HostileSignals, AnEarlySigtermStopsCleanlyAndAFileSizeLimitNamesTheFile) {
  const auto dir = scratch_dir("signals");
  const auto config = write_run_config(dir, "c.json", two_step_run(dir + "/run"));
  const pid_t pid = qkd::test::start_cli({"--config", config}, dir + "/term.log");
  // Once main() runs (its first log line): before it, the signal meets the default action.
  for (int i = 0; i < 6000 && read_file(dir + "/term.log").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_TRUE(qkd::test::wait_for_exit(pid, 60, status)) << read_file(dir + "/term.log");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << ": " << read_file(dir + "/term.log");

  // A 64 KiB file-size limit: the 14 MB checkpoint cannot be written; the error names it, exit 1.
  const auto limited = write_run_config(dir, "limited.json", two_step_run(dir + "/limited"));
  const int code = std::system(("ulimit -f 128; " + std::string(QKD_BINARY) + " --config " + limited + " > " + dir +
                                "/limited.log 2>&1")
                                   .c_str());
  const auto log = read_file(dir + "/limited.log");
  ASSERT_TRUE(WIFEXITED(code)) << "killed by a signal: " << log;
  qkd::test::expect_clean_failure({WEXITSTATUS(code), log}, dir + "/limited", "File too large");
  EXPECT_FALSE(fs::exists(dir + "/limited/checkpoints/step-00000001"));
}

}  // namespace
