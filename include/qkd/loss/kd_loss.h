#pragma once
// Distillation losses between teacher and student next-token distributions.
//
// The loss and its gradient with respect to the student logits are computed together, in fp32, over
// chunks of tokens: only one chunk's [chunk, vocab] fp32 probabilities exist at a time, never the
// full [tokens, vocab] tensors of both models. The gradient is handed to autograd through a custom
// function, so `loss.backward()` works as usual.
#include <torch/torch.h>

#include <string>

#include "qkd/common/config_fields.h"

namespace qkd::loss {

enum class Divergence { forward_kl, reverse_kl, jensen_shannon };
const EnumTable<Divergence>& divergences();  // "forward_kl" | "reverse_kl" | "jsd"

// Where the teacher's distribution comes from: the teacher model, run beside the student (`online`),
// or its top-k log-probabilities stored by `qkd-train cache-teacher` (`cache`, docs/offline-teacher.md).
enum class TeacherSource { online, cache };
const EnumTable<TeacherSource>& teacher_sources();  // "online" | "cache"

// Which next tokens the cross-entropy term predicts: every one (`all`), or only response tokens
// (`responses`): the prompt of alpaca and sharegpt records (instruction, user turns) and each BOS are
// then given, not predicted. The divergence covers every position either way.
enum class CeTargets { all, responses };
const EnumTable<CeTargets>& ce_targets();  // "all" | "responses"

struct KdLossOptions {
  Divergence divergence = Divergence::forward_kl;
  double kd_weight = 1.0;       // weight of the divergence term
  double ce_weight = 0.0;       // weight of next-token cross-entropy on the data (the paper: CE + KL)
  double temperature = 1.0;     // softens both distributions; the divergence is multiplied by T^2
  int64_t chunk_tokens = 2048;  // rows of [tokens, vocab] processed at once
  TeacherSource teacher = TeacherSource::online;
  std::string teacher_cache;  // teacher `cache`: the directory cache-teacher wrote
  CeTargets ce_on = CeTargets::all;

  // The `kd` section of a run config.
  template <class Fields>
  void fields(Fields& f) {
    f.choice("divergence", divergence, divergences());
    f.number("kd_weight", kd_weight, 0.0, 1e6);
    f.number("ce_weight", ce_weight, 0.0, 1e6);
    f.positive("temperature", temperature);
    f.integer("chunk_tokens", chunk_tokens, 1, std::numeric_limits<int64_t>::max());
    f.choice("teacher", teacher, teacher_sources());
    f.text("teacher_cache", teacher_cache);
    f.choice("ce_on", ce_on, ce_targets());
  }
  void check(const std::string& path) const;  // both weights 0 trains nothing
};

struct KdLossResult {
  torch::Tensor loss;          // scalar, differentiable w.r.t. the student logits
  double divergence = 0.0;     // mean per-token divergence (unweighted, for logging)
  double cross_entropy = 0.0;  // mean next-token CE (computed whenever ce_weight > 0)
};

// The counts a loss is a mean over. By default a loss takes those of the batch it is given; a
// micro-batch computed as row shards on several cores (train/row_shards.h) hands every shard the
// counts of the whole micro-batch, so that the shards' losses and gradients add up to its own.
struct LossDenominators {
  int64_t tokens = 0;      // positions the divergence averages over (batch x seq)
  int64_t ce_targets = 0;  // next-token targets the cross-entropy averages over (at least 1 with CE)
};
// labels as the losses below take them (input_ids, negative where a token is not a CE target).
LossDenominators loss_denominators(const torch::Tensor& labels, const KdLossOptions& options);

// teacher_logits, student_logits: [batch, seq, vocab] (any float dtype; teacher is not differentiated).
// input_ids [batch, seq]: targets for cross-entropy (position t predicts input_ids[t+1]); a negative
// id there is no target (prompt tokens under kd.ce_on responses), and CE is the mean over the others.
// `over`: the denominators of the micro-batch this batch is a row shard of (null: its own).
KdLossResult kd_loss(const torch::Tensor& teacher_logits, const torch::Tensor& student_logits,
                     const torch::Tensor& input_ids, const KdLossOptions& options,
                     const LossDenominators* over = nullptr);

}  // namespace qkd::loss
