#pragma once
// Ranks that would train different runs side by side (another quant.bits, seed, data source, number of
// steps, freeze policy) must not start: at rendezvous each rank's resolved config and the identity of its
// data stream, and later the checkpoint it resumes from, are compared with rank 0's. A difference fails
// on every rank, naming the first key that differs, before any collective could hang or abort on it.
#include <nlohmann/json.hpp>
#include <string>

#include "qkd/distributed/communicator.h"

namespace qkd::train {

// `what` of this rank against rank 0's (`stage` names the comparison in the message). One process:
// nothing to compare.
void require_same_on_every_rank(distributed::Communicator& ranks, const nlohmann::json& what, const std::string& stage);

}  // namespace qkd::train
