#pragma once
// One AdamW moment estimate of one parameter, in its storage format: a float tensor (fp32, or bf16 to
// halve it), or block-wise 8-bit codes with their block maxima (blockwise_int8.h). The update always
// runs on fp32 (or the master's) values: values() widens the stored estimate, the update changes it,
// store() rounds it back once. Stored as fp32 and updated in fp32, values() is the buffer itself and
// store() does nothing, so that path keeps the exact operations it always had.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace qkd::optim {

// int8 storage only pays beyond this many elements (bitsandbytes' min_8bit_size): smaller tensors
// (norms) keep fp32 moments, where 4 bytes per 256-element block would be a large overhead anyway.
constexpr int64_t kMinInt8Elements = 4096;

// The storage a moment of a parameter with `numel` elements gets under optim.moment_dtype `requested`
// (float32, bfloat16, or int8: block-wise 8-bit).
torch::Dtype moment_storage(torch::Dtype requested, int64_t numel);

class MomentBuffer {
 public:
  MomentBuffer() = default;
  // Zeros shaped like `like` (on its device) in `storage` (see moment_storage). `is_signed`: the first
  // moment (signed code map) or the second (unsigned).
  MomentBuffer(const torch::Tensor& like, torch::Dtype storage, bool is_signed);

  torch::Dtype storage() const { return storage_; }
  // The estimate as `type` values: the buffer itself (or a view of it) when stored in `type` (the update
  // then writes it in place), a fresh tensor otherwise. With `range`, flat elements [first, second) as a
  // 1-d tensor (first a multiple of kInt8BlockSize): the optimizer updates a large tensor piece by
  // piece so that its fp32 temporaries stay small.
  torch::Tensor values(torch::Dtype type) const;
  torch::Tensor values(torch::Dtype type, std::pair<int64_t, int64_t> range) const;
  // Rounds `values` (from values()) into storage; nothing to do when they are the buffer itself.
  void store(const torch::Tensor& values);
  void store(const torch::Tensor& values, std::pair<int64_t, int64_t> range);
  int64_t bytes() const;

  // The tensors a checkpoint holds, under `key` ("<param>.exp_avg"): the float tensor, or the int8
  // codes under `key` and the block maxima under `key`.absmax.
  std::vector<std::pair<std::string, torch::Tensor>> state(const std::string& key) const;
  // The same names and shapes, zero: what a rank receives another rank's state into.
  static std::vector<std::pair<std::string, torch::Tensor>> empty_state(const std::string& key,
                                                                        const torch::Tensor& like,
                                                                        torch::Dtype storage);
  // From a checkpoint's tensors by name, whatever format they were saved in (a run may resume with
  // another moment_dtype): float values are rounded into this storage, int8 codes dequantized first.
  // Fails naming `source` and the tensor for a missing, misshapen or unreadable one.
  void load(const std::string& key, const std::map<std::string, torch::Tensor>& by_name, const std::string& source);

 private:
  torch::Tensor data_;    // float values, or int8 codes
  torch::Tensor absmax_;  // int8 only: fp32 per block
  torch::Dtype storage_ = torch::kFloat32;
  bool signed_ = true;
};

}  // namespace qkd::optim
