#pragma once
// The names the engine implements: filters, tests, methods on str/dict/list and global functions.
// The parser checks every use against these lists so that an unsupported one fails at load time.
#include <string>

namespace qkd::chat {

bool is_supported_filter(const std::string& name);
bool is_supported_test(const std::string& name);
// Methods callable as `value.name(...)`: Python str/dict/list methods and the loop object's.
bool is_supported_method(const std::string& name);
// Functions callable by name: jinja2's range/dict/namespace and transformers' raise_exception and
// strftime_now.
bool is_global_function(const std::string& name);

}  // namespace qkd::chat
