#pragma once
// The filter table: jinja2's built-in filters that chat templates use, plus transformers' tojson.
// Each filter is a plain function of the interpreter (for filters that call other filters or tests),
// the piped value and the call's arguments.
#include <string>
#include <unordered_map>

#include "runtime.h"

namespace qkd::chat {

using FilterFunction = Value (*)(Interpreter&, const Value&, CallArgs&);
using FilterTable = std::unordered_map<std::string, FilterFunction>;

// filters_text.cpp: trim, lower, upper, title, capitalize, replace, string, safe, indent, tojson,
// int, float, abs, round, default/d, length/count.
void add_text_filters(FilterTable& table);
// filters_sequence.cpp: list, join, first, last, map, select, reject, selectattr, rejectattr, items,
// unique, reverse, sort, dictsort, sum, min, max.
void add_sequence_filters(FilterTable& table);

// jinja2's make_attrgetter: "a.b.0" looked up part by part with item access (digits as indices).
Value lookup_attribute_path(const Value& item, const Value& path);

}  // namespace qkd::chat
