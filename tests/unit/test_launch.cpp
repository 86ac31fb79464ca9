// Who a process is in a multi-process run, from torchrun's or SLURM's environment.
#include <gtest/gtest.h>

#include <map>

#include "qkd/distributed/launch.h"
#include "test_support.h"

namespace {

using qkd::distributed::detect_launch;
using qkd::distributed::Launcher;

qkd::distributed::EnvLookup env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(Launch, NoLauncherIsOneProcess) {
  const auto info = detect_launch(env({}));
  EXPECT_EQ(info.launcher, Launcher::single);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_FALSE(info.distributed());
}

TEST(Launch, TorchrunVariables) {
  const auto info = detect_launch(env({{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                                       {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29400"}}));
  EXPECT_EQ(info.launcher, Launcher::torchrun);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.master_addr, "node7");
  EXPECT_EQ(info.master_port, 29400);
}

TEST(Launch, SlurmVariablesAndTheFirstHostOfTheJob) {
  const auto info = detect_launch(env({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "1"},
                                       {"SLURM_JOB_NODELIST", "gpu[07-08]"}}));
  EXPECT_EQ(info.launcher, Launcher::slurm);
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.master_addr, "gpu07");
  EXPECT_EQ(info.master_port, 29500);
  // MASTER_ADDR / MASTER_PORT, when the batch script exports them, win.
  const auto set = detect_launch(env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "a,b"},
                                      {"MASTER_ADDR", "10.0.0.2"}, {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(set.master_addr, "10.0.0.2");
  EXPECT_EQ(set.master_port, 1234);
}

TEST(Launch, TorchrunInsideASlurmAllocationDescribesTheRanks) {
  const auto info = detect_launch(env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}, {"RANK", "1"},
                                       {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "5000"}}));
  EXPECT_EQ(info.launcher, Launcher::torchrun);
  EXPECT_EQ(info.rank, 1);
}

TEST(Launch, FirstSlurmHost) {
  EXPECT_EQ(qkd::distributed::first_slurm_host("node1"), "node1");
  EXPECT_EQ(qkd::distributed::first_slurm_host("node1,node2"), "node1");
  EXPECT_EQ(qkd::distributed::first_slurm_host("gpu[03-05,7],login1"), "gpu03");
  EXPECT_EQ(qkd::distributed::first_slurm_host("rack[2,4]-n[1-3]"), "rack2-n[1-3]");
}

TEST(Launch, BadValuesNameTheirVariable) {
  qkd::test::expect_error([] { detect_launch(env({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"},
                                                  {"MASTER_PORT", "1"}})); },
                          "RANK: 2 is not below WORLD_SIZE 2");
  qkd::test::expect_error([] { detect_launch(env({{"RANK", "0"}, {"WORLD_SIZE", "two"}})); },
                          "WORLD_SIZE: expected an integer");
  qkd::test::expect_error([] { detect_launch(env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}})); },
                          "MASTER_ADDR: not set");
  qkd::test::expect_error([] { detect_launch(env({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                                  {"MASTER_PORT", "70000"}})); },
                          "MASTER_PORT: expected an integer in [1, 65535]");
  qkd::test::expect_error([] { detect_launch(env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}})); },
                          "SLURM_JOB_NODELIST: not set");
}

}  // namespace
