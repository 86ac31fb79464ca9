// The offline teacher: the top-k targets, the bucketed forward KL and its gradient (against float64
// autograd, and against kd_loss when k is the whole vocabulary), the cache's writer and reader, resume
// after an interruption, and the one-line errors naming what differs.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "qkd/common/error.h"
#include "qkd/data/data_stream.h"
#include "qkd/io/safetensors.h"
#include "qkd/loss/kd_loss.h"
#include "qkd/loss/topk_kd_loss.h"
#include "qkd/teacher_cache/cache_reader.h"
#include "qkd/teacher_cache/cache_writer.h"
#include "qkd/train/run_config.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using qkd::loss::KdLossOptions;
using qkd::loss::TopKTargets;
using qkd::teacher_cache::CacheReader;
using qkd::teacher_cache::CacheWriter;
using qkd::teacher_cache::Manifest;
using qkd::test::expect_error;

constexpr double kInf = std::numeric_limits<double>::infinity();

KdLossOptions options(double temperature, double kd_weight, double ce_weight, int64_t chunk_tokens) {
  KdLossOptions o;
  o.temperature = temperature;
  o.kd_weight = kd_weight;
  o.ce_weight = ce_weight;
  o.chunk_tokens = chunk_tokens;
  return o;
}

struct LossAndGrad {
  double loss;
  torch::Tensor grad;  // d loss / d student logits
};

LossAndGrad run_topk_loss(const TopKTargets& t, const torch::Tensor& student, const torch::Tensor& ids,
                          const KdLossOptions& o) {
  auto z = student.detach().clone().requires_grad_(true);
  auto result = qkd::loss::topk_kd_loss(t, z, ids, o);
  result.loss.backward();
  return {result.loss.item<double>(), z.grad()};
}

// The definition, in float64 through autograd: KL between the teacher's k + 1 buckets (renormalized)
// and the student's, times T^2 and kd_weight, plus ce_weight x next-token cross-entropy. q_rest is a
// log-sum-exp over the other logits, so that the reference stays exact when it underflows.
LossAndGrad reference_loss(const TopKTargets& t, const torch::Tensor& student, const torch::Tensor& ids,
                           const KdLossOptions& o) {
  auto z = student.detach().to(torch::kFloat64).requires_grad_(true);
  const auto log_q = torch::log_softmax(z / o.temperature, -1);
  const auto top = t.ids.to(torch::kInt64);
  const auto log_q_rest = log_q.scatter(-1, top, -kInf).logsumexp(-1);
  auto log_p = t.logprobs.to(torch::kFloat64);
  auto log_p_rest = t.residual_logmass.to(torch::kFloat64);
  const auto norm = torch::cat({log_p, log_p_rest.unsqueeze(-1)}, -1).logsumexp(-1);
  log_p = log_p - norm.unsqueeze(-1);
  log_p_rest = log_p_rest - norm;
  const auto kl =
      (log_p.exp() * (log_p - log_q.gather(-1, top))).sum(-1) + log_p_rest.exp() * (log_p_rest - log_q_rest);
  auto loss = o.kd_weight * o.temperature * o.temperature * kl.mean();
  if (o.ce_weight > 0) {
    const int64_t seq = z.size(1);
    const auto log_probs = torch::log_softmax(z.narrow(1, 0, seq - 1), -1);
    const auto next = ids.narrow(1, 1, seq - 1).unsqueeze(-1);
    loss = loss - o.ce_weight * log_probs.gather(-1, next).mean();
  }
  loss.backward();
  return {loss.item<double>(), z.grad().to(torch::kFloat32)};
}

void expect_same(const LossAndGrad& a, const LossAndGrad& b, double tolerance) {
  EXPECT_NEAR(a.loss, b.loss, tolerance * std::max(1.0, std::abs(b.loss)));
  EXPECT_TRUE(torch::allclose(a.grad, b.grad, 1e-4, tolerance)) << (a.grad - b.grad).abs().max().item<double>();
}

TEST(TopkKdLoss, LossAndGradientEqualFloat64AutogradOfTheBucketedKl) {
  torch::manual_seed(11);
  const int64_t vocab = 50;
  const auto teacher = torch::randn({2, 5, vocab}) * 3;
  const auto student = torch::randn({2, 5, vocab}) * 3;
  const auto ids = torch::randint(vocab, {2, 5}, torch::kInt64);
  for (double temperature : {1.0, 2.5})
    for (int64_t k : {1, 7, 49})
      for (bool fp16 : {false, true}) {
        SCOPED_TRACE("T " + std::to_string(temperature) + " k " + std::to_string(k) + (fp16 ? " fp16" : " fp32"));
        auto targets = qkd::loss::teacher_topk(teacher, k, temperature);
        if (fp16) targets.logprobs = targets.logprobs.to(torch::kFloat16);  // as the cache stores them
        const auto o = options(temperature, 0.7, 0.3, /*chunk_tokens=*/3);
        expect_same(run_topk_loss(targets, student, ids, o), reference_loss(targets, student, ids, o), 2e-6);
      }
}

// Outside the top-k the gradient is q_j (1 - p_rest / q_rest) / T: checked entry by entry.
TEST(TopkKdLoss, GradientOutsideTheTopKIsQTimesOneMinusTheMassRatio) {
  torch::manual_seed(5);
  const int64_t vocab = 20, k = 4;
  const double temperature = 2.0;
  const auto teacher = torch::randn({1, 1, vocab}) * 2, student = torch::randn({1, 1, vocab}) * 2;
  const auto targets = qkd::loss::teacher_topk(teacher, k, temperature);
  const auto grad = run_topk_loss(targets, student, torch::zeros({1, 1}, torch::kInt64), options(temperature, 1, 0, 8))
                        .grad.reshape({vocab});
  const auto q = torch::softmax(student.reshape({vocab}).to(torch::kFloat64) / temperature, 0);
  const auto top = targets.ids.reshape({k});
  const double q_rest = 1.0 - q.index_select(0, top).sum().item<double>();
  const double p_rest = std::exp(targets.residual_logmass.item<double>());
  std::vector<bool> in_top(vocab, false);
  for (int64_t i = 0; i < k; ++i) in_top[top[i].item<int64_t>()] = true;
  for (int64_t j = 0; j < vocab; ++j) {
    if (in_top[j]) continue;
    // d(T^2 KL)/dz = T^2 x (q_j (1 - p_rest / q_rest) / T)
    const double expected = temperature * q[j].item<double>() * (1.0 - p_rest / q_rest);
    EXPECT_NEAR(grad[j].item<double>(), expected, 1e-6) << "token " << j;
  }
}

TEST(TopkKdLoss, WithKEqualToTheVocabularyItIsKdLossForwardKl) {
  torch::manual_seed(3);
  const int64_t vocab = 64;
  const auto teacher = torch::randn({2, 6, vocab}) * 2, student = torch::randn({2, 6, vocab}) * 2;
  const auto ids = torch::randint(vocab, {2, 6}, torch::kInt64);
  for (double temperature : {1.0, 3.0}) {
    const auto o = options(temperature, 0.8, 0.5, 5);
    const auto targets = qkd::loss::teacher_topk(teacher, vocab, temperature);
    EXPECT_TRUE(torch::all(torch::isinf(targets.residual_logmass)).item<bool>());
    auto z = student.clone().requires_grad_(true);
    const auto full = qkd::loss::kd_loss(teacher, z, ids, o);
    full.loss.backward();
    const auto topk = qkd::loss::topk_kd_loss(targets, student, ids, o);
    EXPECT_NEAR(topk.divergence, full.divergence, 1e-6);
    EXPECT_NEAR(topk.cross_entropy, full.cross_entropy, 1e-6);
    expect_same(run_topk_loss(targets, student, ids, o), {full.loss.item<double>(), z.grad()}, 1e-6);
  }
}

// A student that puts almost nothing outside the teacher's top-k (q_rest ~ e^-198, the teacher's p_rest
// 0.03): q_rest = 1 - sum q_k cancels to 0 in fp32, and the rest bucket's term would be inf. Computed as
// a log-sum-exp it is exact.
TEST(TopkKdLoss, VanishingStudentRestMassStaysFiniteAndExact) {
  const int64_t vocab = 40, k = 3;
  auto teacher = torch::full({1, 2, vocab}, -5.0);
  auto student = torch::full({1, 2, vocab}, -200.0);
  teacher.narrow(2, 0, k).copy_(torch::tensor({2.0, 1.0, 0.5}).expand({1, 2, k}));
  student.narrow(2, 0, k).copy_(torch::tensor({1.0, 1.5, 0.0}).expand({1, 2, k}));
  const auto targets = qkd::loss::teacher_topk(teacher, k, 1.0);
  const auto o = options(1.0, 1.0, 0.0, 2048);
  const auto ours = run_topk_loss(targets, student, torch::zeros({1, 2}, torch::kInt64), o);
  ASSERT_TRUE(std::isfinite(ours.loss));
  ASSERT_TRUE(torch::all(torch::isfinite(ours.grad)).item<bool>());
  // The rest bucket's term p_rest (log p_rest - log q_rest) ~ 0.03 x 195 is most of the loss.
  expect_same(ours, reference_loss(targets, student, torch::zeros({1, 2}, torch::kInt64), o), 2e-6);
}

TEST(TopkKdLoss, OnlyForwardKlIsDefinedOverTheBuckets) {
  const auto teacher = torch::randn({1, 2, 10});
  const auto targets = qkd::loss::teacher_topk(teacher, 3, 1.0);
  auto o = options(1.0, 1.0, 0.0, 8);
  o.divergence = qkd::loss::Divergence::reverse_kl;
  expect_error(
      [&] {
        qkd::loss::topk_kd_loss(targets, teacher, torch::zeros({1, 2}, torch::kInt64), o);
      },
      {"kd.divergence", "reverse_kl", "forward_kl"});
}

TEST(TeacherTopk, KeepsTheLargestLogProbabilitiesAndTheMassOfTheRest) {
  torch::manual_seed(2);
  const auto logits = torch::randn({1, 4, 30}) * 4;
  const double temperature = 1.5;
  const auto targets = qkd::loss::teacher_topk(logits, 5, temperature, /*chunk_tokens=*/3);
  const auto log_p = torch::log_softmax(logits.to(torch::kFloat64) / temperature, -1);
  const auto [values, ids] = log_p.topk(5, -1);
  EXPECT_TRUE(torch::equal(targets.ids, ids));
  EXPECT_TRUE(torch::allclose(targets.logprobs.to(torch::kFloat64), values, 0, 1e-5));
  const auto rest = torch::log(1.0 - values.exp().sum(-1));
  EXPECT_TRUE(torch::allclose(targets.residual_logmass.to(torch::kFloat64), rest, 0, 1e-5));
  expect_error([&] { qkd::loss::teacher_topk(logits, 31, 1.0); }, {"top-k", "1..30"});
}

// ---------------------------------------------------------------------------------------------
// The cache

constexpr int64_t kVocab = 4096, kK = 4, kMicroBatch = 2, kSeqLen = 16, kSteps = 7;

qkd::data::DataConfig data_config() {
  qkd::data::DataConfig d;
  d.sources.push_back({qkd::test::repo_path("assets/data/kjv/kjv-train.u16")});
  d.seq_len = kSeqLen;
  d.seed = 3;
  return d;
}

Manifest manifest(const qkd::data::DataConfig& data = data_config()) {
  Manifest m;
  m.identity.teacher = qkd::teacher_cache::teacher_identity("/teachers/kjv", "float32");
  m.identity.data = qkd::teacher_cache::data_identity(data);
  m.identity.micro_batch = kMicroBatch;
  m.identity.grad_accum = 1;
  m.identity.seq_len = kSeqLen;
  m.identity.steps = kSteps;
  m.identity.temperature = 1.0;
  m.k = kK;
  m.vocab_size = kVocab;
  m.shard_micro_batches = 2;  // shards of 2, 2, 2 and 1 micro-batches
  return m;
}

// A stand-in teacher: logits that are a fixed function of the tokens.
torch::Tensor fake_logits(const torch::Tensor& batch) {
  const auto columns = torch::arange(kVocab, torch::kFloat32) * 0.011;
  return torch::sin(batch.to(torch::kFloat32).unsqueeze(-1) * 0.37 + columns) * 4;
}

// cache-teacher's loop with the stand-in teacher; stops (as a signal would) before micro-batch `stop_at`.
void fill_cache(const std::string& dir, const Manifest& m, int64_t stop_at = -1) {
  CacheWriter writer(dir, m);
  qkd::data::DataStream stream(data_config(), nullptr);
  if (!writer.resume_cursor().is_null()) stream.restore(writer.resume_cursor());
  while (!writer.complete()) {
    if (writer.next_micro_batch() == stop_at) return;
    const auto batch = stream.next_batch(kMicroBatch);
    writer.add(batch, qkd::loss::teacher_topk(fake_logits(batch), kK, 1.0), stream.cursor());
  }
  writer.finish();
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(TeacherCache, ReaderReturnsWhatTheWriterStoredForTheTrainersBatches) {
  const auto dir = qkd::test::scratch_dir("cache") + "/cache";
  fill_cache(dir, manifest());
  EXPECT_EQ(files_in(dir),
            (std::vector<std::string>{"manifest.json", "shard-00000.safetensors", "shard-00001.safetensors",
                                      "shard-00002.safetensors", "shard-00003.safetensors"}));
  const auto stored = qkd::teacher_cache::read_manifest(dir);
  EXPECT_TRUE(stored.complete);
  EXPECT_EQ(stored.tokens(), kSteps * kMicroBatch * kSeqLen);
  int64_t bytes = 0;
  for (int s = 0; s < 4; ++s) bytes += fs::file_size(qkd::teacher_cache::shard_path(dir, s));
  EXPECT_EQ(stored.shard_bytes, bytes);
  const auto shard = qkd::io::SafetensorsFile::open(qkd::teacher_cache::shard_path(dir, 3));
  EXPECT_EQ(shard.info("topk_ids").dtype, qkd::io::DType::u16);
  EXPECT_EQ(shard.info("input_ids").dtype, qkd::io::DType::u16);
  EXPECT_EQ(shard.info("topk_logprobs").dtype, qkd::io::DType::f16);
  EXPECT_EQ(shard.info("residual_logmass").shape, (std::vector<int64_t>{1, kMicroBatch, kSeqLen}));

  CacheReader reader(dir);
  qkd::data::DataStream stream(data_config(), nullptr);
  for (int64_t i = 0; i < kSteps; ++i) {
    const auto batch = stream.next_batch(kMicroBatch);
    const auto expected = qkd::loss::teacher_topk(fake_logits(batch), kK, 1.0);
    const auto cached = reader.next(batch);
    EXPECT_TRUE(torch::equal(cached.ids.to(torch::kInt64), expected.ids)) << i;
    EXPECT_TRUE(torch::equal(cached.logprobs, expected.logprobs.to(torch::kFloat16))) << i;
    EXPECT_TRUE(torch::equal(cached.residual_logmass, expected.residual_logmass)) << i;
  }
  expect_error([&] { reader.next(stream.next_batch(kMicroBatch)); }, {"manifest.json", "used up"});
}

TEST(TeacherCache, ReaderRefusesABatchOtherThanTheCachedOneNamingShardAndMicroBatch) {
  const auto dir = qkd::test::scratch_dir("cache") + "/cache";
  fill_cache(dir, manifest());
  CacheReader reader(dir);
  qkd::data::DataStream stream(data_config(), nullptr);
  for (int i = 0; i < 3; ++i) stream.next_batch(kMicroBatch);
  reader.seek(3);  // a resumed run: micro-batch 3 is the first one it draws
  reader.next(stream.next_batch(kMicroBatch));
  auto other = stream.next_batch(kMicroBatch);
  other[0][5] = (other[0][5].item<int64_t>() + 1) % kVocab;
  expect_error([&] { reader.next(other); }, {"shard-00002.safetensors", "micro-batch 4", "input_ids differ"});
}

// An interruption anywhere (here: after micro-batch 4 of 7, mid-shard, with a killed writer's temporary
// left behind) and a second run produce exactly the bytes of an uninterrupted run.
TEST(TeacherCache, ResumeAfterAnInterruptionWritesTheSameBytesAsOneRun) {
  const auto root = qkd::test::scratch_dir("cache-resume");
  fill_cache(root + "/straight", manifest());
  const auto dir = root + "/resumed";
  fill_cache(dir, manifest(), /*stop_at=*/5);
  EXPECT_FALSE(qkd::teacher_cache::read_manifest(dir).complete);
  EXPECT_FALSE(fs::exists(qkd::teacher_cache::shard_path(dir, 2)));  // micro-batch 4 was not kept
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const auto shard = fs::path(qkd::teacher_cache::shard_path(dir, 2));
  const auto stale = (shard.parent_path() / ("." + shard.filename().string() + ".qkd-tmp-" + std::to_string(dead) + "-0")).string();
  std::ofstream(stale) << "half a shard";
  {
    CacheWriter writer(dir, manifest());
    EXPECT_EQ(writer.resumed_shards(), 2);
    EXPECT_EQ(writer.next_micro_batch(), 4);
    EXPECT_EQ(writer.resume_cursor().at("windows"), 4 * kMicroBatch);
  }
  EXPECT_FALSE(fs::exists(stale));
  fill_cache(dir, manifest());
  ASSERT_EQ(files_in(dir), files_in(root + "/straight"));
  for (const auto& name : files_in(dir))
    EXPECT_EQ(qkd::test::read_file(dir + "/" + name), qkd::test::read_file(root + "/straight/" + name)) << name;
  // A complete cache opened again has nothing left to do.
  EXPECT_TRUE(CacheWriter(dir, manifest()).complete());
}

TEST(TeacherCache, AnotherConfigAgainstAnExistingCacheFailsNamingManifestAndField) {
  const auto dir = qkd::test::scratch_dir("cache-other") + "/cache";
  fill_cache(dir, manifest(), /*stop_at=*/2);
  auto data = data_config();
  data.seed = 4;
  expect_error([&] { CacheWriter(dir, manifest(data)); }, {dir + "/manifest.json", "data.seed: cached 3, config 4"});
  auto m = manifest();
  m.k = 8;
  expect_error([&] { CacheWriter(dir, m); }, {"manifest.json", "k: cached 4, config 8"});
  m = manifest();
  m.identity.teacher = qkd::teacher_cache::teacher_identity("/teachers/other", "float32");
  expect_error([&] { CacheWriter(dir, m); }, {"manifest.json", "teacher.path", "/teachers/other"});
  std::ofstream(dir + "/../notes.txt") << "x";
  expect_error([&] { CacheWriter(fs::path(dir).parent_path().string(), manifest()); }, "not a teacher cache");
}

TEST(TeacherCache, ARunMustMatchTeacherDataBatchAndTemperatureAndFitInTheCache) {
  const auto dir = qkd::test::scratch_dir("cache-run") + "/cache";
  fill_cache(dir, manifest());
  const auto cached = qkd::teacher_cache::read_manifest(dir);
  const auto usable = [&](const qkd::teacher_cache::CacheIdentity& run, int64_t micro_batches) {
    qkd::teacher_cache::require_usable_for(cached, run, micro_batches, dir, "kd.teacher_cache");
  };
  auto run = manifest().identity;
  run.steps = 3;  // fewer steps and another grad_accum are fine: the stream is the same
  run.grad_accum = 2;
  usable(run, 6);
  expect_error([&] { usable(run, 8); },
               {"kd.teacher_cache", "manifest.json", "micro_batches: cached 7, the run needs 8"});
  auto other = run;
  other.micro_batch = 4;
  expect_error([&] { usable(other, 2); }, {"kd.teacher_cache", "manifest.json", "micro_batch: cached 2, run 4"});
  other = run;
  other.temperature = 2.0;
  expect_error([&] { usable(other, 2); }, {"kd.teacher_cache", "temperature: cached 1.0, run 2.0"});
  other = run;
  other.data["sources"][0]["weight"] = 2.0;
  expect_error([&] { usable(other, 2); }, {"kd.teacher_cache", "data.sources[0].weight"});
  other = run;
  other.teacher = qkd::teacher_cache::teacher_identity("/teachers/kjv", "bfloat16");
  expect_error([&] { usable(other, 2); }, {"kd.teacher_cache", "teacher.dtype"});

  const auto partial = qkd::test::scratch_dir("cache-partial") + "/cache";
  fill_cache(partial, manifest(), 4);
  expect_error(
      [&] {
        qkd::teacher_cache::require_usable_for(qkd::teacher_cache::read_manifest(partial), run, 2, partial,
                                               "kd.teacher_cache");
      },
      {"kd.teacher_cache", "complete: false"});
}

TEST(TeacherCache, DamagedShardOrManifestFailsNamingTheFile) {
  const auto dir = qkd::test::scratch_dir("cache-damaged") + "/cache";
  fill_cache(dir, manifest(), 4);
  const auto shard = qkd::teacher_cache::shard_path(dir, 1);
  fs::resize_file(shard, fs::file_size(shard) - 10);
  expect_error([&] { CacheWriter(dir, manifest()); }, "shard-00001.safetensors");
  auto text = qkd::test::read_file(qkd::teacher_cache::manifest_path(dir));
  text.replace(text.find("\"tokens\""), 8, "\"tokenz\"");
  std::ofstream(qkd::teacher_cache::manifest_path(dir)) << text;
  expect_error([&] { CacheReader{dir}; }, {"manifest.json", "tokens"});
}

// ---------------------------------------------------------------------------------------------
// The kd section

json run_config_json(const std::string& dir) {
  return {{"run_dir", dir + "/run"},
          {"teacher", {{"path", qkd::test::shipped_teacher()}}},
          {"data", {{"sources", {{{"path", qkd::test::repo_path("assets/data/kjv/kjv-train.u16")}}}}}},
          {"kd", {{"teacher", "cache"}, {"teacher_cache", dir}}}};
}

TEST(TeacherCacheConfig, CacheNeedsAnExistingDirectoryAndForwardKl) {
  const auto dir = qkd::test::scratch_dir("cache-config");
  const auto config = qkd::train::parse_run_config(run_config_json(dir));
  EXPECT_EQ(config.kd().teacher, qkd::loss::TeacherSource::cache);
  EXPECT_EQ(config.resolved().at("kd").at("teacher"), "cache");
  auto j = run_config_json(dir);
  j["kd"].erase("teacher_cache");
  expect_error([&] { qkd::train::parse_run_config(j); }, {"kd.teacher_cache", "required with kd.teacher cache"});
  j = run_config_json(dir + "/absent");
  expect_error([&] { qkd::train::parse_run_config(j); }, {"kd.teacher_cache", "directory not found"});
  j = run_config_json(dir);
  j["kd"]["divergence"] = "jsd";
  expect_error([&] { qkd::train::parse_run_config(j); }, {"kd.divergence", "jsd"});
  j = run_config_json(dir);
  j["kd"]["teacher"] = "offline";
  expect_error([&] { qkd::train::parse_run_config(j); }, {"kd.teacher", "online, cache"});
  j = run_config_json(dir);
  j["kd"]["teacher"] = "online";
  EXPECT_EQ(qkd::train::parse_run_config(j).unread_settings(),
            std::vector<std::string>{"kd.teacher_cache: only read with kd.teacher cache"});
}

}  // namespace
