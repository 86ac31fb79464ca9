#include "qkd/train/student_init.h"

#include "qkd/checkpoint/hf_checkpoint.h"
#include "qkd/checkpoint/student_checkpoint.h"
#include "qkd/common/error.h"
#include "qkd/common/json_io.h"
#include "qkd/data/data_stream.h"
#include "qkd/ptq/gptq.h"
#include "qkd/quant/student.h"
#include "qkd/tokenizer/tokenizer.h"

namespace qkd::train {

namespace {

// "scale_policy: checkpoint \"static\", config \"dynamic\"; ..." for the fields that differ.
std::string quant_differences(const quant::QuantSpec& saved, const quant::QuantSpec& current) {
  const auto a = quant::quant_spec_to_json(saved), b = quant::quant_spec_to_json(current);
  std::string out;
  for (const auto& [key, value] : b.items()) {
    const auto old = a.contains(key) ? json_excerpt(a.at(key)) : std::string("(absent)");
    if (!a.contains(key) || a.at(key) != value)
      out += (out.empty() ? "" : "; ") + key + ": checkpoint " + old + ", config " + json_excerpt(value);
  }
  for (const auto& [key, value] : a.items())
    if (!b.contains(key))
      out += (out.empty() ? "" : "; ") + key + ": checkpoint " + json_excerpt(value) + ", config (absent)";
  return out;
}

// student.init gptq: the teacher quantized by GPTQ (in fp32 on the CPU) on the first windows of a fresh
// copy of the training stream, which the run's own stream does not notice.
InitialStudent gptq_student(const RunConfig& config) {
  InitialStudent out;
  out.model = checkpoint::load_llama(config.teacher().path, {torch::kFloat32, torch::kCPU});
  out.quantized_modules = quant::attach_quantizers(*out.model, config.quant());
  const auto& s = config.student();
  auto data = config.data();
  if (s.gptq_calib_seq_len > 0) data.seq_len = s.gptq_calib_seq_len;
  const auto tokenizer = tokenizer::load_tokenizer_for_checkpoint(config.teacher().path);
  data::DataStream stream(data, &tokenizer);
  ptq::GptqOptions options;
  options.damp = s.gptq_damp;
  options.act_order = s.gptq_act_order;
  options.latent = s.gptq_latent;
  ptq::gptq_quantize_student(*out.model, stream.next_batch(s.gptq_calib_batches), options);
  out.model->to(s.dtype);
  return out;
}

InitialStudent checkpoint_student(const RunConfig& config) {
  const auto& init = config.student().init;
  auto loaded = checkpoint::load_model_or_student(init.path, {config.student().dtype, torch::kCPU});
  InitialStudent out;
  out.model = loaded.model;
  if (!loaded.quant)
    out.quantized_modules = quant::attach_quantizers(*out.model, config.quant());
  else if (*loaded.quant != config.quant())
    fail("student.init", init.path + " was quantized with a different quant section (" +
                             quant_differences(*loaded.quant, config.quant()) + ")");
  else
    out.quantized_modules = quant::quantized_modules(*out.model);
  return out;
}

}  // namespace

InitialStudent build_student(const RunConfig& config, const torch::Device& device) {
  InitialStudent student;
  switch (config.student().init.kind) {
    case StudentInit::Kind::teacher:
      student.model = checkpoint::load_llama(config.teacher().path, {config.student().dtype, torch::kCPU});
      student.quantized_modules = quant::attach_quantizers(*student.model, config.quant());
      break;
    case StudentInit::Kind::gptq: student = gptq_student(config); break;
    case StudentInit::Kind::checkpoint: student = checkpoint_student(config); break;
  }
  student.model->to(device);
  student.model->train();
  student.model->set_activation_checkpointing(config.compute().activation_checkpointing);
  return student;
}

}  // namespace qkd::train
