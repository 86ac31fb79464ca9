#pragma once
// Atomic writes: data goes to "<path>.tmp-<pid>-<n>", is flushed and fsync'ed, then renamed over <path>.
// A crash at any point leaves either the old file or the complete new one, never a torn file.
#include <functional>
#include <ostream>
#include <string>

namespace qkd {

// Calls write(stream) on a temporary file next to `path`, then fsyncs and renames it into place.
// On any failure the temporary file is removed and qkd::Error names `path`.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Convenience for small text files (configs, JSON summaries).
void write_text_atomically(const std::string& path, const std::string& text);

// fsync a directory so that a rename inside it is durable.
void sync_directory(const std::string& dir);

}  // namespace qkd
