#pragma once
// Directories this program writes (a student checkpoint, an export, a training checkpoint) carry a
// marker file naming their kind. A directory output is only ever created fresh, or replaced when it is
// this program's own earlier output of the same kind: never a device, a file, a symbolic link, a
// directory of someone else's files, or an input of the same command.
#include <string>

namespace qkd {

inline constexpr const char* kOutputMarker = ".qkd-train-output.json";

// Fails naming `dir` unless it is absent, an empty directory, or a directory holding the marker of
// `kind` ("student", "export-hf", ...).
void claim_output_directory(const std::string& dir, const std::string& kind);
// Writes the marker of `kind` into `dir` (write_directory_atomically does, into what it builds).
void write_output_marker(const std::string& dir, const std::string& kind);

// Fails naming `output_option` when `output` is the input path `input` (given as `input_option`) or
// holds it: a command must not replace what it reads. (An output inside an input's directory, such as
// a run directory's export/, replaces nothing it reads.)
void require_apart(const std::string& output, const std::string& output_option, const std::string& input,
                   const std::string& input_option);

}  // namespace qkd
