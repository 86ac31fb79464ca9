// c10d through qkd::distributed: two ranks (threads of this process, Gloo over loopback) reduce, broadcast and
// gather; a rank that leaves makes the other's collective fail with an error naming it.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "qkd/common/error.h"
#include "qkd/distributed/communicator.h"
#include "qkd/distributed/replicas.h"
#include "qkd/distributed/sharded_optimizer.h"
#include "test_support.h"

namespace {

using qkd::distributed::Communicator;

qkd::distributed::LaunchInfo rank_of_two(int rank, int port) {
  qkd::distributed::LaunchInfo info;
  info.launcher = qkd::distributed::Launcher::torchrun;
  info.rank = rank;
  info.world_size = 2;
  info.master_port = port;
  return info;
}

qkd::distributed::CommunicatorOptions options(int timeout_ms) {
  qkd::distributed::CommunicatorOptions o;
  o.backend = qkd::distributed::Backend::gloo;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

// Runs `body(rank, communicator)` on two ranks at once; rethrows the first failure.
void on_two_ranks(const std::function<void(int, Communicator&)>& body, int timeout_ms = 20000) {
  const int port = qkd::test::free_port();
  auto rank = [&](int r) {
    Communicator comm(rank_of_two(r, port), options(timeout_ms), torch::kCPU);
    body(r, comm);
  };
  auto other = std::async(std::launch::async, rank, 1);
  rank(0);
  other.get();
}

TEST(Communicator, OneProcessNeedsNoPeers) {
  Communicator comm;
  EXPECT_EQ(comm.world_size(), 1);
  std::vector<torch::Tensor> t{torch::ones({3})};
  comm.all_reduce_sum(t);
  EXPECT_TRUE(torch::equal(t[0], torch::ones({3})));
  EXPECT_EQ(comm.all_gather(torch::tensor({7})).sizes(), (std::vector<int64_t>{1, 1}));
}

TEST(Communicator, AllReduceBroadcastAndGatherOnTwoRanks) {
  on_two_ranks([](int rank, Communicator& comm) {
    EXPECT_EQ(comm.rank(), rank);
    // Mixed dtypes and shapes, reduced in place.
    std::vector<torch::Tensor> t{torch::full({2, 2}, rank + 1.0), torch::full({3}, rank + 1, torch::kInt64)};
    comm.all_reduce_sum(t);
    EXPECT_TRUE(torch::equal(t[0], torch::full({2, 2}, 3.0)));
    EXPECT_TRUE(torch::equal(t[1], torch::full({3}, 3, torch::kInt64)));
    // bfloat16, which Gloo lacks: summed in fp32, sent as bit patterns.
    std::vector<torch::Tensor> h{torch::full({3}, 0.5 * (rank + 1), torch::kBFloat16)};
    comm.all_reduce_sum(h);
    EXPECT_TRUE(torch::equal(h[0], torch::full({3}, 1.5, torch::kBFloat16)));
    std::vector<torch::Tensor> hb{torch::full({2}, rank == 0 ? 0.3 : 7.0, torch::kBFloat16)};
    comm.broadcast_from_root(hb);
    EXPECT_TRUE(torch::equal(hb[0], torch::full({2}, 0.3, torch::kBFloat16)));
    std::vector<torch::Tensor> b{torch::full({4}, rank == 0 ? 5.0 : -1.0)};
    comm.broadcast_from_root(b);
    EXPECT_TRUE(torch::equal(b[0], torch::full({4}, 5.0)));
    const auto gathered = comm.all_gather(torch::tensor({rank * 10}, torch::kInt64));
    EXPECT_TRUE(torch::equal(gathered, torch::tensor({0, 10}, torch::kInt64).reshape({2, 1})));
    comm.barrier();
    EXPECT_GT(comm.seconds_in_collectives(), 0.0);
  });
}

// Buckets smaller than one gradient, frozen parameters skipped: every gradient is the mean of the ranks'.
TEST(Communicator, GradientsAreAveragedBucketByBucket) {
  on_two_ranks([](int rank, Communicator& comm) {
    std::vector<torch::Tensor> params;
    for (int i = 0; i < 5; ++i) {
      auto p = torch::zeros({3, 4}).requires_grad_(i != 2);
      if (i != 2) p.mutable_grad() = torch::full({3, 4}, (rank + 1) * (i + 1.0));
      params.push_back(p);
    }
    qkd::distributed::average_gradients(comm, params, /*bucket_bytes=*/40);
    for (int i = 0; i < 5; ++i) {
      if (i == 2) {
        EXPECT_FALSE(params[i].grad().defined());
        continue;
      }
      EXPECT_TRUE(torch::equal(params[i].grad(), torch::full({3, 4}, 1.5 * (i + 1.0)))) << i;
    }
    std::vector<double> values{rank * 2.0, 8.0};
    qkd::distributed::average_values(comm, values);
    EXPECT_EQ(values, (std::vector<double>{1.0, 8.0}));
    const auto same = qkd::distributed::replica_fingerprints(comm, {torch::arange(10)});
    EXPECT_EQ(same[0], same[1]);
    const auto differ = qkd::distributed::replica_fingerprints(comm, {torch::arange(10) + rank});
    EXPECT_NE(differ[0], differ[1]);
  });
}

TEST(Sharding, OwnersBalanceTheElementsInOrder) {
  EXPECT_EQ(qkd::distributed::shard_owners({10, 4, 4, 3, 1}, 2), (std::vector<int>{0, 1, 1, 1, 0}));
  EXPECT_EQ(qkd::distributed::shard_owners({5, 5, 5}, 1), (std::vector<int>{0, 0, 0}));
  EXPECT_EQ(qkd::distributed::shard_owners({1, 1, 1, 1}, 3), (std::vector<int>{0, 1, 2, 0}));
}

TEST(Sharding, EachTensorComesFromItsOwner) {
  on_two_ranks([](int rank, Communicator& comm) {
    std::vector<torch::Tensor> t{torch::full({2}, rank + 1.0), torch::full({3}, rank + 10, torch::kInt64),
                                 torch::full({1}, rank + 100.0)};
    qkd::distributed::broadcast_from_owners(comm, t, {1, 0, 1});
    EXPECT_TRUE(torch::equal(t[0], torch::full({2}, 2.0)));
    EXPECT_TRUE(torch::equal(t[1], torch::full({3}, 10, torch::kInt64)));
    EXPECT_TRUE(torch::equal(t[2], torch::full({1}, 101.0)));
  });
}

TEST(Communicator, LocalShareSplitsTheGlobalBatchByRank) {
  const auto batch = torch::arange(12).reshape({6, 2});
  EXPECT_TRUE(torch::equal(qkd::distributed::local_share(batch, 1, 3), batch.narrow(0, 2, 2)));
  qkd::test::expect_error([&] { qkd::distributed::local_share(batch, 0, 4); }, "6 rows do not split evenly over 4 ranks");
}

// Rank 1 leaves (its sockets close and its heartbeat stops) while rank 0 waits in an all-reduce: rank 0
// fails well inside the timeout, naming rank 1.
TEST(Communicator, ALostRankFailsTheOthersWithItsName) {
  const int port = qkd::test::free_port();
  std::promise<void> left;
  auto leaver = std::async(std::launch::async, [&] {
    Communicator comm(rank_of_two(1, port), options(30000), torch::kCPU);
    comm.barrier();
    // gone, without taking part in the next collective
    left.set_value();
  });
  Communicator comm(rank_of_two(0, port), options(30000), torch::kCPU);
  comm.barrier();
  left.get_future().wait();
  leaver.get();
  const auto start = std::chrono::steady_clock::now();
  std::vector<torch::Tensor> t{torch::ones({4})};
  qkd::test::expect_error([&] { comm.all_reduce_sum(t); }, {"distributed all_reduce", "lost rank 1"});
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(25));
}

// A rank that is alive but never joins the collective: the timeout ends the wait.
TEST(Communicator, ACollectiveNobodyJoinsTimesOut) {
  const int port = qkd::test::free_port();
  std::promise<void> done;
  auto idle = std::async(std::launch::async, [&] {
    Communicator comm(rank_of_two(1, port), options(1500), torch::kCPU);
    comm.barrier();
    done.get_future().wait();  // alive, beating, but never in the all-reduce
  });
  Communicator comm(rank_of_two(0, port), options(1500), torch::kCPU);
  comm.barrier();
  std::vector<torch::Tensor> t{torch::ones({4})};
  qkd::test::expect_error([&] { comm.all_reduce_sum(t); }, {"distributed all_reduce", "still alive"});
  done.set_value();
  idle.get();
}

}  // namespace
