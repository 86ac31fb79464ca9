// A C interface to sentencepiece, built as its own shared library and loaded with dlopen(RTLD_DEEPBIND).
//
// Why: Debian's libsentencepiece embeds protobuf-lite 3.14 and exports its symbols, while LibTorch
// links the system protobuf 3.21. Linked into one process the two interpose each other and the
// program dies in static initialization. Loaded with RTLD_DEEPBIND, sentencepiece binds to its own
// copy and stays out of the global symbol scope. This file must not include any LibTorch header.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
void copy_error(const std::string& message, char* error, size_t capacity) {
  if (!error || capacity == 0) return;
  std::strncpy(error, message.c_str(), capacity - 1);
  error[capacity - 1] = '\0';
}
}  // namespace

extern "C" {

void* qkd_spm_load(const char* path, char* error, size_t capacity) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  const auto status = sp->Load(path);
  if (!status.ok()) {
    copy_error(status.ToString(), error, capacity);
    delete sp;
    return nullptr;
  }
  return sp;
}

void qkd_spm_free(void* handle) { delete static_cast<sentencepiece::SentencePieceProcessor*>(handle); }

// Returns a malloc'ed array in *ids (free with qkd_spm_release); 0 on success.
int qkd_spm_encode(void* handle, const char* text, size_t length, int** ids, size_t* count, char* error,
                   size_t capacity) {
  std::vector<int> out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Encode(std::string(text, length), &out);
  if (!status.ok()) {
    copy_error(status.ToString(), error, capacity);
    return 1;
  }
  *count = out.size();
  *ids = static_cast<int*>(std::malloc(std::max<size_t>(1, out.size()) * sizeof(int)));
  std::memcpy(*ids, out.data(), out.size() * sizeof(int));
  return 0;
}

// Returns a malloc'ed string in *text (free with qkd_spm_release); 0 on success.
int qkd_spm_decode(void* handle, const int* ids, size_t count, char** text, size_t* length, char* error,
                   size_t capacity) {
  std::string out;
  const auto status =
      static_cast<sentencepiece::SentencePieceProcessor*>(handle)->Decode(std::vector<int>(ids, ids + count), &out);
  if (!status.ok()) {
    copy_error(status.ToString(), error, capacity);
    return 1;
  }
  *length = out.size();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.data(), out.size() + 1);
  return 0;
}

void qkd_spm_release(void* pointer) { std::free(pointer); }

int qkd_spm_piece_size(void* handle) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->GetPieceSize();
}
int qkd_spm_bos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->bos_id(); }
int qkd_spm_eos_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->eos_id(); }
int qkd_spm_pad_id(void* handle) { return static_cast<sentencepiece::SentencePieceProcessor*>(handle)->pad_id(); }

}  // extern "C"
