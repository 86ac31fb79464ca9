// Seeded fuzzing of every kind of file the program reads: safetensors weights, a Hugging Face
// config.json, run configs, JSONL data, tokenizer.json, chat templates and training checkpoints,
// mutated by truncation, byte flips, type swaps, deep nesting, huge and negative numbers, and replaced
// by special files (FIFO, directory, /dev/zero). Each case runs the library entry point the CLI uses in
// a forked child, caught the way main() catches, and must end with exit 0 or 1 (never a signal), within
// a time limit, and, on failure, with one line naming a file. QKD_FUZZ_CASES / QKD_FUZZ_SEED change
// the count and the seed.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <random>

#include "cli_failures.h"
#include "fuzz_support.h"
#include "qkd/chat/chat_template.h"
#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/data/data_stream.h"
#include "qkd/tokenizer/hf_tokenizer.h"
#include "qkd/tokenizer/tokenizer.h"
#include "qkd/train/checkpoint_store.h"
#include "qkd/train/run_config.h"
#include "test_support.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace qkd::test;

const std::string kModel = fixture_path("models/tiny-llama-tied-llama3rope-bf16");

// One kind of input: `cases` mutations of a file, each loaded by the entry point the CLI uses.
struct FuzzKind {
  std::string dir;  // scratch space of this kind
  std::mt19937_64& rng;
  Tally& tally;
  int cases;

  // Case `path`: one in 20 a special file (FIFO, directory, /dev/zero...), else `mutated()`.
  void write_case(const std::string& path, const std::function<std::string()>& mutated) const {
    if (rng() % 20 == 0)
      make_special(path, rng);
    else
      write_bytes(path, mutated());
  }
  // `load` run in a forked child within 20 s and judged as "<label> #i", naming `file`.
  void judge_case(const std::string& label, int i, const std::string& file, const std::function<void()>& load) const {
    judge(tally, run_forked(load, 20), label + " #" + std::to_string(i), file);
  }
};

void fuzz_safetensors(const FuzzKind& k) {
  const auto weights = read_bytes(kModel + "/model.safetensors");
  const auto model = k.dir + "/model";
  fs::create_directories(model);
  fs::copy_file(kModel + "/tokenizer.model", model + "/tokenizer.model");
  fs::copy_file(kModel + "/config.json", model + "/config.json");
  for (int i = 0; i < k.cases; ++i) {
    k.write_case(model + "/model.safetensors", [&] { return mutate_bytes(weights, k.rng, 4096); });
    k.judge_case("safetensors", i, model + "/model.safetensors", [&] { qkd::checkpoint::load_llama(model); });
    fs::remove_all(model + "/model.safetensors");
  }
}

void fuzz_hf_config(const FuzzKind& k) {
  const auto hf_config = read_bytes(kModel + "/config.json");
  const auto model = k.dir + "/model";
  fs::create_directories(model);
  for (const auto* f : {"tokenizer.model", "model.safetensors"}) fs::copy_file(kModel + "/" + f, model + "/" + f);
  for (int i = 0; i < k.cases; ++i) {
    fs::remove_all(model + "/config.json");
    k.write_case(model + "/config.json", [&] { return mutate_json_text(hf_config, k.rng); });
    k.judge_case("config.json", i, model + "/config.json", [&] { qkd::checkpoint::load_llama(model); });
  }
}

void fuzz_run_config(const FuzzKind& k) {
  const auto run_config = json{{"run_dir", k.dir + "/run"},
                               {"teacher", {{"path", kModel}}},
                               {"quant", {{"bits", 4}, {"granularity", "per_group"}, {"group_size", 32}}},
                               {"data", {{"sources", {{{"path", k.dir + "/data.jsonl"}}}}, {"seq_len", 16}}},
                               {"kd", {{"ce_weight", 0.5}}},
                               {"optim", {{"lr", 1e-3}}},
                               {"train", {{"steps", 2}, {"micro_batch", 2}}},
                               {"freeze", {{"policy", "ov"}}},
                               {"checkpoint", {{"interval", 1}}}}
                              .dump();
  write_bytes(k.dir + "/data.jsonl", json{{"text", "In the beginning"}}.dump() + "\n");
  const auto path = k.dir + "/run.json";
  for (int i = 0; i < k.cases; ++i) {
    fs::remove_all(path);
    k.write_case(path, [&] { return mutate_json_text(run_config, k.rng); });
    k.judge_case("run config", i, path, [&] { qkd::train::load_run_config(path, {}); });
  }
}

void fuzz_jsonl_data(const FuzzKind& k) {
  std::string jsonl;
  for (int i = 0; i < 12; ++i)
    jsonl += json{{"text", "In the beginning God created the heaven and the earth " + std::to_string(i)}}.dump() + "\n";
  const auto tokenizer = std::make_shared<qkd::tokenizer::Tokenizer>(kModel + "/tokenizer.model");
  const auto path = k.dir + "/data.jsonl";
  auto data_config = qkd::data::data_config_from_json(json{{"sources", {{{"path", path}}}}, {"seq_len", 16}});
  for (int i = 0; i < k.cases; ++i) {
    fs::remove_all(path);
    k.write_case(path, [&] {
      std::string text = k.rng() % 2 ? mutate_bytes(jsonl, k.rng, jsonl.size()) : jsonl;
      if (k.rng() % 2) text += mutate_json_text(json{{"text", "And God said"}}.dump(), k.rng) + "\n";
      return text;
    });
    data_config.strict = k.rng() % 2 == 0;
    const auto read_three_batches = [&] {
      qkd::data::DataStream stream(data_config, tokenizer.get());
      for (int b = 0; b < 3; ++b) stream.next_batch(2);
    };
    k.judge_case("jsonl", i, path, read_three_batches);
  }
}

// A tokenizer.json (the byte-level fixture: normalizer, pre-tokenizer, BPE, post-processor, decoder)
// loaded and used on a line of text.
void fuzz_tokenizer_json(const FuzzKind& k) {
  const auto original = read_bytes(fixture_path("tokenizers/byte_level/tokenizer.json"));
  const auto path = k.dir + "/tokenizer.json";
  for (int i = 0; i < k.cases; ++i) {
    fs::remove_all(path);
    k.write_case(path, [&] { return mutate_json_text(original, k.rng); });
    const auto load_and_encode = [&] {
      const qkd::tokenizer::HfTokenizer tokenizer(path);
      const auto ids = tokenizer.encode("In the beginning, \xe2\x80\x9cGod\xe2\x80\x9d created 42 things.", true);
      tokenizer.decode(ids, false);
    };
    k.judge_case("tokenizer.json", i, path, load_and_encode);
  }
}

// Fragments a hostile template might hold: unbounded loops, deep nesting, calls of what is not callable.
std::string template_fragment(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return "{% for a in range(99999) %}{% for b in range(99999) %}{{ a }}{% endfor %}{% endfor %}";
    case 1: return std::string(200, '(');
    case 2: return "{% macro m(x) %}{{ m(x) }}{% endmacro %}{{ m(1) }}";
    case 3: return "{{ messages[0]['content'] * 100000 * 100000 }}";
    case 4: return "{{ raise_exception('refused') }}";
    default: return "{% if %}{{ }}{% endfor %}";
  }
}

void fuzz_chat_template(const FuzzKind& k) {
  const auto original = read_bytes(fixture_path("chat_templates/meta-llama-Llama-3.1-8B-Instruct.jinja"));
  const auto messages = nlohmann::ordered_json::parse(
      R"([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who made the heaven?"},
          {"role": "assistant", "content": "God."}])");
  const auto where = k.dir + "/tokenizer_config.json";
  for (int i = 0; i < k.cases; ++i) {
    std::string source = original;
    if (k.rng() % 2)
      source = mutate_bytes(source, k.rng, source.size());
    else
      source.insert(k.rng() % (source.size() + 1), template_fragment(k.rng));
    const auto parse_and_render = [&] {
      const auto chat = qkd::chat::ChatTemplate::parse(source, where);
      chat.render_with_assistant_spans(messages);
    };
    k.judge_case("chat template", i, where, parse_and_render);
  }
}

// A training checkpoint with one file damaged, with and without its checksums.
void fuzz_checkpoint(const FuzzKind& k) {
  const auto config = write_run_config(k.dir, "c.json", two_step_run(k.dir + "/run"));
  const auto r = run_cli("--config " + config, "", 300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto original = k.dir + "/run/checkpoints/step-00000002";
  const auto ckpt = k.dir + "/step-00000002";
  const std::vector<std::string> files = {"state.json", "student.safetensors", "optimizer.safetensors", "checksums.json"};
  fs::copy(original, ckpt, fs::copy_options::recursive);
  for (int i = 0; i < k.cases; ++i) {
    const auto& name = files[k.rng() % files.size()];
    const auto path = ckpt + "/" + name;
    k.write_case(path, [&] {
      return name.find(".json") != std::string::npos ? mutate_json_text(read_bytes(path), k.rng)
                                                     : mutate_bytes(read_bytes(path), k.rng, 4096);
    });
    if (k.rng() % 2) fs::remove_all(ckpt + "/checksums.json");
    k.judge_case("checkpoint", i, ckpt, [&] { qkd::train::CheckpointStore::load(ckpt); });
    // Only the damaged file and the checksums are restored: copying the whole checkpoint each time cost
    // more than loading it.
    for (const auto& restored : {name, std::string("checksums.json")}) {
      fs::remove_all(ckpt + "/" + restored);
      fs::copy(original + "/" + restored, ckpt + "/" + restored);
    }
  }
}

TEST(Fuzz, MutatedInputsExitCleanlyWithinTheirTimeLimit) {
  const std::vector<std::pair<const char*, void (*)(const FuzzKind&)>> kinds = {
      {"safetensors", fuzz_safetensors},         {"config.json", fuzz_hf_config},
      {"run config", fuzz_run_config},           {"jsonl", fuzz_jsonl_data},
      {"tokenizer.json", fuzz_tokenizer_json},   {"chat template", fuzz_chat_template},
      {"checkpoint", fuzz_checkpoint}};
  const int cases_per_kind = env_int("QKD_FUZZ_CASES", 2800) / static_cast<int>(kinds.size());
  spdlog::set_level(spdlog::level::err);  // skipped records are expected here by the thousand
  std::mt19937_64 rng(static_cast<uint64_t>(env_int("QKD_FUZZ_SEED", 20261130)));
  const auto dir = scratch_dir("fuzz");
  Tally tally;
  const auto started = std::chrono::steady_clock::now();
  for (size_t k = 0; k < kinds.size(); ++k) {
    const auto& [name, fuzz] = kinds[k];
    const auto kind_dir = dir + "/kind" + std::to_string(k);
    fs::create_directories(kind_dir);
    const int before = tally.cases;
    const auto kind_started = std::chrono::steady_clock::now();
    fuzz({kind_dir, rng, tally, cases_per_kind});
    std::printf("fuzz: %-15s %4d cases in %5.1f s\n", name, tally.cases - before,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - kind_started).count());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("fuzz: %d cases in %.1f s: %d loaded, %d clean errors, %zu problems (crashes, hangs, bad messages)\n",
              tally.cases, seconds, tally.ok, tally.clean_errors, tally.problems.size());
  for (size_t i = 0; i < tally.problems.size() && i < 30; ++i) ADD_FAILURE() << tally.problems[i];
  EXPECT_GE(tally.cases, cases_per_kind * static_cast<int>(kinds.size()));
  EXPECT_TRUE(tally.problems.empty());
}

}  // namespace
