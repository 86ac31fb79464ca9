#pragma once
// Atomic writes: data goes to ".<name>.qkd-tmp-<pid>-<n>" beside <path>, is flushed and fsync'ed, then
// renamed over <path>.
// A crash at any point leaves either the old file or the complete new one, never a torn file.
#include <functional>
#include <ostream>
#include <string>

namespace qkd {

// Calls write(stream) on a temporary file next to `path`, then fsyncs and renames it into place.
// On any failure the temporary file is removed and qkd::Error names `path`.
void write_file_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Fails (naming `path`) unless it is absent or a regular file, and its directory exists. Commands call
// it on their output paths before doing any work; write_file_atomically calls it too.
void require_replaceable_output(const std::string& path);

// Convenience for small text files (configs, JSON summaries).
void write_text_atomically(const std::string& path, const std::string& text);

// Copies a regular file of at most 64 MiB (a tokenizer, a generation config) atomically; fails naming
// `from` when it cannot be read.
void copy_file_atomically(const std::string& from, const std::string& to);

// Builds a directory under a temporary name next to `dir` (".<name>.qkd-tmp-<pid>"; `fill` writes into
// the path it is given), marks it as this program's output of `kind` (output_directory.h), syncs it and
// swaps it into place: `dir` is always either absent, the old complete directory or the new complete
// one. An existing `dir` that is not this program's `kind` is refused before anything is written. On
// failure the temporary directory is removed and the error rethrown.
void write_directory_atomically(const std::string& dir, const std::string& kind,
                                const std::function<void(const std::string& temp_dir)>& fill);

// Removes the temporaries (".<name>.qkd-tmp-<pid>" directories, ".<name>.qkd-tmp-<pid>-<n>" files) that
// processes which no longer run left in `dir` when they were killed; returns how many were removed.
// Nothing else is touched.
int remove_stale_temporaries(const std::string& dir);

// Removes `dir` so that a kill part way leaves no half-deleted directory under its name: it is first
// renamed to one of this program's temporaries (which remove_stale_temporaries sweeps later).
void remove_directory_atomically(const std::string& dir);

// fsync a directory so that a rename inside it is durable.
void sync_directory(const std::string& dir);

}  // namespace qkd
