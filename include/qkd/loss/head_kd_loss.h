#pragma once
// The distillation loss taken from the final hidden states of teacher and student through their
// output heads, so that no [tokens, vocab] logits tensor ever exists whole: each chunk of rows forms
// its teacher and student logits, its loss and logit gradient (the same arithmetic as kd_loss), and
// turns that gradient into the student's hidden-state and head gradients at once. Besides memory
// (a 4 x 2048-token LLaMA-2 micro-batch has 1 GB of fp32 logits per model), the chunk's logits stay
// in cache between the products and the softmax passes (docs/PERFORMANCE.md).
//
// Not for fp16: there the loss scale must multiply the fp32 logit gradient before any fp16 product,
// and the scale is only known in backward; kd_loss (from logits) keeps that path.
#include <torch/torch.h>

#include "qkd/loss/kd_loss.h"

namespace qkd::loss {

// teacher_hidden, student_hidden: [batch, seq, hidden] (after the final norm); teacher_head,
// student_head: [vocab, hidden] output weights (the student's as its forward uses it, e.g. fake-
// quantized). Differentiable w.r.t. student_hidden and student_head. Teacher products run outside
// any autocast (in the teacher's dtype); student products under the caller's autocast.
KdLossResult kd_loss_from_hidden(const torch::Tensor& teacher_hidden, const torch::Tensor& teacher_head,
                                 const torch::Tensor& student_hidden, const torch::Tensor& student_head,
                                 const torch::Tensor& input_ids, const KdLossOptions& options,
                                 const LossDenominators* over = nullptr);

}  // namespace qkd::loss
