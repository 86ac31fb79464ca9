// safetensors reader/writer: roundtrips, the on-disk layout the spec (and Python) expects, the
// reference model files, zero-copy views, and one-line errors for every kind of corrupt file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "qkd/common/error.h"
#include "qkd/io/safetensors.h"
#include "test_support.h"

namespace fs = std::filesystem;
using qkd::io::DType;
using qkd::io::NamedTensors;
using qkd::io::SafetensorsFile;

namespace {

using qkd::test::expect_error;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A hand-made file: length prefix, header text exactly as given, then `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string data(data_bytes, '\0');
  for (size_t i = 0; i < data_bytes; ++i) data[i] = static_cast<char>(i % 2);  // valid as BOOL too
  return u64_le(header.size()) + header + data;
}

// Runs `action`, expecting a qkd::Error whose one-line message contains every string in `parts`.
torch::Tensor sample(torch::ScalarType type, std::vector<int64_t> shape) {
  auto values = (torch::randn(shape, torch::kFloat64) * 50).clamp(-100, 100);  // in range for I8
  if (type == torch::kBool) return values > 0;
  return values.to(type);
}

const std::string kTeacher = "models/kjv-teacher-7m/";

}  // namespace

TEST(SafetensorsDType, NamesSizesAndTorchTypesAgree) {
  EXPECT_EQ(qkd::io::dtype_name(DType::bf16), "BF16");
  EXPECT_EQ(qkd::io::dtype_size(DType::f64), 8u);
  EXPECT_EQ(qkd::io::dtype_size(DType::boolean), 1u);
  EXPECT_EQ(qkd::io::to_torch(DType::f16), torch::kHalf);
  EXPECT_EQ(qkd::io::from_torch(torch::kBFloat16), DType::bf16);
  EXPECT_EQ(qkd::io::from_torch(torch::kUInt8), DType::u8);
  EXPECT_THROW(qkd::io::from_torch(torch::kComplexFloat), qkd::Error);
}

TEST(SafetensorsRoundtrip, EveryDtypeKeepsValuesShapeAndOrder) {
  const auto path = qkd::test::scratch_dir("st-roundtrip") + "/all.safetensors";
  const std::vector<torch::ScalarType> types = {torch::kFloat64, torch::kFloat32, torch::kFloat16, torch::kBFloat16,
                                                torch::kInt64,   torch::kInt32,   torch::kInt16,   torch::kInt8,
                                                torch::kUInt8,   torch::kBool};
  NamedTensors tensors;
  for (size_t i = 0; i < types.size(); ++i) {
    // Odd sizes mix alignments; the written order is deliberately not alphabetical.
    tensors.emplace_back("t" + std::to_string(types.size() - i), sample(types[i], {3, static_cast<int64_t>(i) + 1}));
  }
  qkd::io::write_safetensors(path, tensors);

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  ASSERT_EQ(file.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(file.tensors()[i].name, tensors[i].first) << "file order must follow the given order";
    const auto loaded = file.tensor(tensors[i].first);
    EXPECT_EQ(loaded.scalar_type(), tensors[i].second.scalar_type()) << tensors[i].first;
    EXPECT_EQ(loaded.sizes(), tensors[i].second.sizes()) << tensors[i].first;
    EXPECT_TRUE(torch::equal(loaded, tensors[i].second)) << tensors[i].first;
  }
}

TEST(SafetensorsRoundtrip, NonContiguousScalarAndEmptyTensors) {
  const auto path = qkd::test::scratch_dir("st-strided") + "/strided.safetensors";
  const auto base = torch::arange(24, torch::kFloat32).reshape({4, 6});
  const auto transposed = base.t();                                                              // strides swapped
  const auto stepped = base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 6, 2)});  // gaps
  const auto bf16 = base.to(torch::kBFloat16).t();
  const auto scalar = torch::tensor(3.5, torch::kFloat64).reshape({});
  const auto empty = torch::empty({0, 5}, torch::kFloat16);
  ASSERT_FALSE(transposed.is_contiguous());
  ASSERT_FALSE(stepped.is_contiguous());
  qkd::io::write_safetensors(
      path, {{"transposed", transposed}, {"stepped", stepped}, {"bf16", bf16}, {"scalar", scalar}, {"empty", empty}});

  const auto loaded = qkd::io::read_safetensors(path);
  ASSERT_EQ(loaded.size(), 5u);
  EXPECT_TRUE(torch::equal(loaded[0].second, transposed));
  EXPECT_TRUE(torch::equal(loaded[1].second, stepped));
  EXPECT_TRUE(torch::equal(loaded[2].second, bf16));
  EXPECT_EQ(loaded[3].second.dim(), 0);
  EXPECT_EQ(loaded[3].second.item<double>(), 3.5);
  EXPECT_EQ(loaded[4].second.sizes(), torch::IntArrayRef({0, 5}));
  EXPECT_EQ(loaded[4].second.scalar_type(), torch::kHalf);
  const auto& info = SafetensorsFile::open(path).info("empty");
  EXPECT_EQ(info.begin, info.end);
}

// U16 (token ids of vocabularies up to 65536) has no LibTorch 1.13 type: written from an integer tensor
// named in stored_as, stored as little-endian uint16, read back widened to int32; rows() reads a slice.
TEST(SafetensorsRoundtrip, U16IsStoredInTwoBytesAndReadAsInt32) {
  const auto path = qkd::test::scratch_dir("st-u16") + "/ids.safetensors";
  const auto ids = torch::tensor({0, 1, 32767, 32768, 40000, 65535}, torch::kInt64).reshape({3, 2});
  qkd::io::write_safetensors(path, {{"ids", ids}, {"f", torch::ones({3})}}, {{"format", "pt"}}, {{"ids", DType::u16}});
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.info("ids").dtype, DType::u16);
  EXPECT_EQ(file.info("ids").end - file.info("ids").begin, 12u);
  const auto bytes = read_bytes(path);
  const size_t data = 8 + (static_cast<size_t>(static_cast<unsigned char>(bytes[0])) |
                           static_cast<size_t>(static_cast<unsigned char>(bytes[1])) << 8);
  EXPECT_EQ(bytes.substr(data + 4, 4), std::string("\xff\x7f\x00\x80", 4));  // 32767, 32768 little-endian
  const auto loaded = file.tensor("ids");
  EXPECT_EQ(loaded.scalar_type(), torch::kInt32);
  EXPECT_TRUE(torch::equal(loaded.to(torch::kInt64), ids));
  EXPECT_TRUE(torch::equal(file.rows("ids", 1, 2).to(torch::kInt64), ids.narrow(0, 1, 2)));
  EXPECT_TRUE(torch::equal(file.rows("f", 2, 1), torch::ones({1})));
  expect_error([&] { file.rows("ids", 2, 2); }, {path, "tensor 'ids'", "rows [2, 4) outside [0, 3)"});
  expect_error(
      [&] {
        qkd::io::write_safetensors(path, {{"ids", ids + 1}}, {}, {{"ids", DType::u16}});
      },
      {"tensor 'ids'", "0..65535"});
  expect_error(
      [&] {
        qkd::io::write_safetensors(path, {{"f", torch::ones({2})}}, {}, {{"f", DType::u16}});
      },
      {"tensor 'f'", "integer"});
}

TEST(SafetensorsWrite, LayoutMatchesTheSpecByteForByte) {
  // What the Python library writes for {"x": tensor([1., -2.])} with metadata {"format": "pt"}.
  const auto path = qkd::test::scratch_dir("st-layout") + "/x.safetensors";
  qkd::io::write_safetensors(path, {{"x", torch::tensor({1.0f, -2.0f})}});
  std::string header = R"({"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string data("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);  // little-endian 1.0f, -2.0f
  EXPECT_EQ(read_bytes(path), u64_le(header.size()) + header + data);
}

TEST(SafetensorsWrite, HeaderIsPaddedSoDataStartsEightByteAligned) {
  const auto dir = qkd::test::scratch_dir("st-pad");
  for (int name_length = 1; name_length <= 9; ++name_length) {
    const auto path = dir + "/p" + std::to_string(name_length) + ".safetensors";
    qkd::io::write_safetensors(path, {{std::string(name_length, 'n'), torch::ones({2}, torch::kFloat64)}}, {});
    const auto bytes = read_bytes(path);
    uint64_t length = 0;
    for (int i = 7; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(bytes[i]);
    EXPECT_EQ(length % 8, 0u);
    EXPECT_EQ(bytes[8], '{');
    EXPECT_EQ(bytes.find("__metadata__"), std::string::npos) << "empty metadata is left out";
    const auto json_end = bytes.rfind('}', 8 + length);
    for (size_t i = json_end + 1; i < 8 + length; ++i) EXPECT_EQ(bytes[i], ' ');
    EXPECT_EQ(bytes.size(), 8 + length + 16);
  }
}

TEST(SafetensorsWrite, RejectsDuplicateReservedAndUnsupportedTensors) {
  const auto path = qkd::test::scratch_dir("st-bad-write") + "/w.safetensors";
  const auto t = torch::ones({2});
  expect_error([&] { qkd::io::write_safetensors(path, {{"a", t}, {"a", t}}); }, {path, "'a'", "twice"});
  expect_error([&] { qkd::io::write_safetensors(path, {{"__metadata__", t}}); }, {path, "'__metadata__'", "reserved"});
  expect_error(
      [&] {
        qkd::io::write_safetensors(path, {{"c", torch::ones({2}, torch::kComplexFloat)}});
      },
      {path, "'c'"});
  EXPECT_FALSE(fs::exists(path));
}

TEST(SafetensorsRead, TeacherModelIsFp16WithExpectedShapesAndValues) {
  const auto path = qkd::test::fixture_path(kTeacher + "model.safetensors");
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file.tensors().size(), 57u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const auto embed = file.tensor("model.embed_tokens.weight");
  EXPECT_EQ(embed.scalar_type(), torch::kHalf);
  EXPECT_EQ(embed.sizes(), torch::IntArrayRef({4096, 256}));
  // First values, decoded independently from the file with Python's struct module.
  const auto first = embed.index({0, torch::indexing::Slice(0, 4)}).to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(
      first, torch::tensor({0.01641845703125f, -0.0267486572265625f, 0.004024505615234375f, 0.026397705078125f})));
  EXPECT_EQ(file.info("model.layers.0.input_layernorm.weight").shape, std::vector<int64_t>({256}));
  for (size_t i = 1; i < file.tensors().size(); ++i) EXPECT_EQ(file.tensors()[i].begin, file.tensors()[i - 1].end);
}

TEST(SafetensorsRead, ReferenceLogitsHoldTokenIdsAndFloatLogits) {
  const auto path = qkd::test::fixture_path(kTeacher + "reference_logits.safetensors");
  const auto file = SafetensorsFile::open(path);
  EXPECT_TRUE(file.metadata().empty());
  const auto ids = file.tensor("input_ids_0");
  EXPECT_EQ(ids.scalar_type(), torch::kLong);
  EXPECT_EQ(ids.sizes(), torch::IntArrayRef({1, 24}));
  EXPECT_EQ(ids[0][0].item<int64_t>(), 1);
  EXPECT_EQ(ids[0][1].item<int64_t>(), 1073);
  EXPECT_EQ(ids[0][23].item<int64_t>(), 4057);
  const auto logits = file.tensor("logits_1");
  EXPECT_EQ(logits.scalar_type(), torch::kFloat);
  EXPECT_EQ(logits.sizes(), torch::IntArrayRef({1, 120, 4096}));
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  EXPECT_FALSE(file.contains("logits_2"));
  expect_error([&] { file.info("logits_2"); }, {path, "'logits_2'", "not found"});
}

TEST(SafetensorsRead, TensorsAreViewsIntoOneMappingThatOutlivesTheFile) {
  const auto path = qkd::test::fixture_path(kTeacher + "model.safetensors");
  torch::Tensor embed;
  {
    const auto file = SafetensorsFile::open(path);
    embed = file.tensor("model.embed_tokens.weight");
    const auto again = file.tensor("model.embed_tokens.weight");
    EXPECT_EQ(embed.data_ptr(), again.data_ptr()) << "two views of one tensor must share memory";
    const auto head = file.tensor("lm_head.weight");
    const auto& head_info = file.info("lm_head.weight");
    const auto& embed_info = file.info("model.embed_tokens.weight");
    // Distance between views equals the distance in the file: both point into the same mapping.
    EXPECT_EQ(static_cast<char*>(embed.data_ptr()) - static_cast<char*>(head.data_ptr()),
              static_cast<std::ptrdiff_t>(embed_info.begin - head_info.begin));
  }
  // The SafetensorsFile is gone; the view must still read the mapped values.
  EXPECT_NEAR(embed[0][0].item<float>(), 0.01641845703125f, 1e-7);
}

TEST(SafetensorsRead, InPlaceChangeToAViewNeverReachesTheFile) {
  const auto path = qkd::test::scratch_dir("st-cow") + "/cow.safetensors";
  qkd::io::write_safetensors(path, {{"w", torch::ones({4, 4})}});
  {
    auto view = SafetensorsFile::open(path).tensor("w");
    view.mul_(7);  // copy-on-write page, no crash
    EXPECT_EQ(view[0][0].item<float>(), 7.0f);
  }
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path).tensor("w"), torch::ones({4, 4})));
}

TEST(SafetensorsRead, MisalignedDataIsCopiedWithCorrectValues) {
  const auto path = qkd::test::scratch_dir("st-misaligned") + "/m.safetensors";
  const auto floats = torch::tensor({1.5f, -2.25f, 1e30f});
  const auto halves = torch::tensor({0.5f, 3.0f}).to(torch::kHalf);
  // 3 bytes of U8 push the F32 data off its 4-byte alignment.
  qkd::io::write_safetensors(
      path, {{"bytes", torch::tensor({1, 2, 3}, torch::kUInt8)}, {"floats", floats}, {"halves", halves}});
  const auto file = SafetensorsFile::open(path);
  ASSERT_EQ(file.info("floats").begin, 3u);
  const auto loaded = file.tensor("floats");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(loaded.data_ptr()) % 4, 0u);
  EXPECT_TRUE(torch::equal(loaded, floats));
  EXPECT_TRUE(torch::equal(file.tensor("halves"), halves));
}

TEST(SafetensorsRead, OddHeaderLengthFromOtherWritersIsAccepted) {
  const auto path = qkd::test::scratch_dir("st-oddheader") + "/o.safetensors";
  const std::string header = R"({"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}})";  // 55 bytes, no padding
  const std::string data("\x01\x00\xff\xff", 4);
  write_bytes(path, u64_le(header.size()) + header + data);
  EXPECT_TRUE(torch::equal(SafetensorsFile::open(path).tensor("a"), torch::tensor({1, -1}, torch::kInt16)));
}

// ---------------------------------------------------------------------------------------------
// corrupt files: each must give one qkd::Error naming the file and, where there is one, the tensor

namespace {

// Two tensors as our writer lays them out: alpha F32[4] at [0,16], beta F16[2,3] at [16,28].
std::string good_file(const std::string& dir) {
  const auto path = dir + "/good.safetensors";
  qkd::io::write_safetensors(path, {{"alpha", torch::ones({4})}, {"beta", torch::ones({2, 3}, torch::kHalf)}});
  return read_bytes(path);
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

}  // namespace

TEST(SafetensorsCorrupt, GoodFileBaselineOpens) {
  const auto dir = qkd::test::scratch_dir("st-good");
  write_bytes(dir + "/g.safetensors", good_file(dir));
  EXPECT_EQ(SafetensorsFile::open(dir + "/g.safetensors").tensors().size(), 2u);
}

TEST(SafetensorsCorrupt, TruncatedDataSectionNamesTheLastTensor) {
  const auto dir = qkd::test::scratch_dir("st-trunc");
  const auto bytes = good_file(dir);
  const auto path = dir + "/truncated.safetensors";
  write_bytes(path, bytes.substr(0, bytes.size() - 5));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "tensor 'beta'", "past the end"});
}

TEST(SafetensorsCorrupt, HeaderLengthLargerThanFile) {
  const auto dir = qkd::test::scratch_dir("st-hlen");
  auto bytes = good_file(dir);
  const auto path = dir + "/hlen.safetensors";
  write_bytes(path, u64_le(bytes.size()) + bytes.substr(8));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header: length prefix", "exceeds the file size"});
  write_bytes(path, u64_le(~uint64_t{0}) + bytes.substr(8));  // must not overflow into "fits"
  expect_error([&] { SafetensorsFile::open(path); }, {path, "header: length prefix"});
  write_bytes(path, u64_le(100'000'001) + "{");
  fs::resize_file(path, 100'000'200);  // sparse: the prefix fits the file but breaks the 100 MB limit
  expect_error([&] { SafetensorsFile::open(path); }, {path, "100 MB"});
}

TEST(SafetensorsCorrupt, FilesShorterThanEightBytesAndMissingFiles) {
  const auto dir = qkd::test::scratch_dir("st-short");
  const auto path = dir + "/short.safetensors";
  write_bytes(path, std::string("\x05\x00\x00", 3));
  expect_error([&] { SafetensorsFile::open(path); }, {path, "3 bytes", "8-byte"});
  write_bytes(path, "");
  expect_error([&] { SafetensorsFile::open(path); }, {path, "0 bytes"});
  expect_error([&] { SafetensorsFile::open(dir + "/absent.safetensors"); },
               {dir + "/absent.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile::open(dir); }, {dir, "not a regular file"});
}

struct CorruptCase {
  const char* label;
  std::string header;
  size_t data_bytes;
  std::vector<std::string> expected;  // besides the path
};

// Keeps gtest from dumping the struct's bytes into every test name.
void PrintTo(const CorruptCase& c, std::ostream* out) { *out << c.label; }

class SafetensorsCorruptHeader : public ::testing::TestWithParam<CorruptCase> {};

TEST_P(SafetensorsCorruptHeader, GivesOneLineErrorNamingFileAndTensor) {
  const auto& c = GetParam();
  const auto path = qkd::test::scratch_dir("st-corrupt") + "/" + c.label + ".safetensors";
  write_bytes(path, raw_file(c.header, c.data_bytes));
  auto expected = c.expected;
  expected.push_back(path);
  expect_error([&] { SafetensorsFile::open(path).tensor("a"); }, expected);
}

const std::string kA16 = entry("a", "F32", "[4]", "[0,16]");

INSTANTIATE_TEST_SUITE_P(
    Cases, SafetensorsCorruptHeader,
    ::testing::Values(
        CorruptCase{"invalid_json", R"({"a":{"dtype":"F32","shape":[4],)", 16, {"header", "invalid JSON"}},
        CorruptCase{"not_utf8", "{\"a\xff\":1}", 0, {"invalid JSON"}},
        CorruptCase{"top_level_array", "[1,2]", 0, {"header", "must be a JSON object, found array"}},
        CorruptCase{"unknown_dtype", "{" + entry("a", "F13", "[4]", "[0,16]") + "}", 16, {"tensor 'a'", "'F13'"}},
        CorruptCase{"offsets_past_end",
                    "{" + kA16 + "," + entry("b", "F32", "[2]", "[16,24]") + "}",
                    20,
                    {"tensor 'b'", "past the end"}},
        CorruptCase{"overlap",
                    "{" + kA16 + "," + entry("b", "F32", "[2]", "[12,20]") + "}",
                    20,
                    {"tensor 'b'", "overlap", "'a'"}},
        CorruptCase{
            "gap", "{" + kA16 + "," + entry("b", "F32", "[2]", "[20,28]") + "}", 28, {"tensor 'b'", "gap of 4"}},
        CorruptCase{"leading_gap", "{" + entry("a", "F32", "[4]", "[4,20]") + "}", 20, {"tensor 'a'", "gap of 4"}},
        CorruptCase{"trailing_bytes", "{" + kA16 + "}", 20, {"tensor 'a'", "4 bytes after"}},
        CorruptCase{"data_without_tensors", "{}", 8, {"header", "no tensors"}},
        CorruptCase{"shape_bytes_mismatch",
                    "{" + entry("a", "F32", "[4]", "[0,12]") + "}",
                    12,
                    {"tensor 'a'", "needs 16 bytes", "span 12"}},
        CorruptCase{"shape_overflow",
                    "{" + entry("a", "F32", "[4294967296,4294967296]", "[0,16]") + "}",
                    16,
                    {"tensor 'a'", "too large"}},
        CorruptCase{
            "negative_dim", "{" + entry("a", "F32", "[-4]", "[0,16]") + "}", 16, {"tensor 'a'", "non-negative"}},
        CorruptCase{"float_dim", "{" + entry("a", "F32", "[4.0]", "[0,16]") + "}", 16, {"tensor 'a'", "non-negative"}},
        CorruptCase{"begin_after_end", "{" + entry("a", "U8", "[4]", "[8,4]") + "}", 8, {"tensor 'a'", "begin > end"}},
        CorruptCase{"three_offsets", "{" + entry("a", "U8", "[4]", "[0,4,8]") + "}", 8, {"tensor 'a'", "data_offsets"}},
        CorruptCase{"missing_dtype", R"({"a":{"shape":[4],"data_offsets":[0,16]}})", 16, {"tensor 'a'", "'dtype'"}},
        CorruptCase{"entry_not_object", R"({"a":[1]})", 0, {"tensor 'a'", "not a JSON object"}},
        CorruptCase{"duplicate_name", "{" + kA16 + "," + kA16 + "}", 16, {"tensor 'a'", "twice"}},
        CorruptCase{"duplicate_field",
                    R"({"a":{"dtype":"F32","dtype":"F16","shape":[4],"data_offsets":[0,16]}})",
                    16,
                    {"tensor 'a'", "'dtype'", "twice"}},
        CorruptCase{
            "metadata_not_strings", R"({"__metadata__":{"format":1},)" + kA16 + "}", 16, {"__metadata__", "'format'"}},
        CorruptCase{"deep_nesting", "{\"a\":" + std::string(64, '[') + std::string(64, ']') + "}", 0, {"nested"}},
        CorruptCase{
            "name_with_newline", "{" + entry("a\\nb", "F13", "[4]", "[0,16]") + "}", 16, {"tensor 'a\\x0ab'", "F13"}}),
    [](const ::testing::TestParamInfo<CorruptCase>& info) { return std::string(info.param.label); });

TEST(SafetensorsCorrupt, BoolBytesOtherThanZeroOrOne) {
  const auto path = qkd::test::scratch_dir("st-bool") + "/bool.safetensors";
  const std::string header = "{" + entry("flags", "BOOL", "[4]", "[0,4]") + "}";
  write_bytes(path, u64_le(header.size()) + header + std::string("\x00\x01\x02\x01", 4));
  const auto file = SafetensorsFile::open(path);
  expect_error([&] { file.tensor("flags"); }, {path, "tensor 'flags'", "value 2"});
}
