// Filters over sequences. Like jinja2, map/select/reject/selectattr/rejectattr/items/unique return
// one-shot generators (always true, no len()), and reverse returns an iterator, so that templates that
// test or reuse them behave as they do under transformers.
#include <algorithm>

#include "filters.h"
#include "operators.h"
#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

Value generator(std::vector<Value> items) { return Value::list(std::move(items), ListKind::generator); }

Value case_folded(const Value& v, bool case_sensitive) {
  return (!case_sensitive && v.is_string()) ? Value(python_lower(v.as_string())) : v;
}

Value to_list(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "list");
  return Value::list(iterate(input));
}

Value join(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "join", {"d", "attribute"});
  const std::string separator = a.has(0) ? to_str(a.get(0)) : "";
  std::string out;
  bool first = true;
  for (const auto& item : iterate(input)) {
    if (!first) out += separator;
    first = false;
    out += to_str(a.has(1) && !a.get(1).is_none() ? lookup_attribute_path(item, a.get(1)) : item);
  }
  return out;
}

Value first(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "first");
  const auto items = iterate(input);
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Value last(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "last");
  if (input.is_list() && (input.as_list().kind == ListKind::generator || input.as_list().kind == ListKind::iterator))
    render_fail("'" + type_name(input) + "' object is not reversible");
  if (!input.is_undefined() && !input.is_string() && !input.is_list() && !input.is_dict())
    render_fail("'" + type_name(input) + "' object is not reversible");
  const auto items = iterate(input);
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

// select/reject/selectattr/rejectattr: [attribute,] [test name, test arguments...].
Value select_or_reject(Interpreter& interpreter, const Value& input, CallArgs& args, bool by_attribute,
                       bool keep_when) {
  if (!truthy(input)) return generator({});
  size_t offset = 0;
  Value attribute;
  if (by_attribute) {
    if (args.positional.empty()) render_fail("Missing parameter for attribute name");
    attribute = args.positional[0];
    offset = 1;
  }
  const bool has_test = args.positional.size() > offset;
  const std::string test = has_test ? to_str(args.positional[offset]) : "";
  CallArgs test_args;
  if (has_test) {
    test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(offset) + 1,
                                args.positional.end());
    test_args.keywords = args.keywords;
  }
  std::vector<Value> kept;
  for (auto& item : iterate(input)) {
    const Value probe = by_attribute ? lookup_attribute_path(item, attribute) : item;
    CallArgs call_args = test_args;
    const bool passes = has_test ? interpreter.apply_test(test, probe, call_args) : truthy(probe);
    if (passes == keep_when) kept.push_back(std::move(item));
  }
  return generator(std::move(kept));
}

Value select(Interpreter& i, const Value& input, CallArgs& args) {
  return select_or_reject(i, input, args, false, true);
}
Value reject(Interpreter& i, const Value& input, CallArgs& args) {
  return select_or_reject(i, input, args, false, false);
}
Value selectattr(Interpreter& i, const Value& input, CallArgs& args) {
  return select_or_reject(i, input, args, true, true);
}
Value rejectattr(Interpreter& i, const Value& input, CallArgs& args) {
  return select_or_reject(i, input, args, true, false);
}

// map(attribute='x'[, default=...]) or map('filter', filter arguments...).
Value map(Interpreter& interpreter, const Value& input, CallArgs& args) {
  if (!truthy(input)) return generator({});
  std::vector<Value> out;
  if (args.positional.empty()) {
    const Value* attribute = nullptr;
    const Value* fallback = nullptr;
    for (const auto& [key, value] : args.keywords) {
      if (key == "attribute") {
        attribute = &value;
      } else if (key == "default") {
        fallback = &value;
      } else {
        render_fail("Unexpected keyword argument " + python_string_repr(key));
      }
    }
    if (!attribute) render_fail("map requires a filter name or an attribute");
    for (const auto& item : iterate(input)) {
      Value v = lookup_attribute_path(item, *attribute);
      if (fallback && !fallback->is_none() && v.is_undefined()) v = *fallback;
      out.push_back(std::move(v));
    }
    return generator(std::move(out));
  }
  const std::string filter = to_str(args.positional[0]);
  CallArgs filter_args;
  filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
  filter_args.keywords = args.keywords;
  for (const auto& item : iterate(input)) {
    CallArgs call_args = filter_args;
    out.push_back(interpreter.apply_filter(filter, item, call_args));
  }
  return generator(std::move(out));
}

Value items(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "items");
  if (input.is_undefined()) return generator({});
  if (!input.is_dict()) render_fail("Can only get item pairs from a mapping.");
  std::vector<Value> pairs;
  for (const auto& [key, value] : input.as_dict().entries)
    pairs.push_back(Value::list({Value(key), value}, ListKind::tuple));
  return generator(std::move(pairs));
}

Value unique(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "unique", {"case_sensitive", "attribute"});
  const bool case_sensitive = truthy(a.get(0));
  std::vector<Value> seen, out;
  for (auto& item : iterate(input)) {
    const Value probe = a.has(1) && !a.get(1).is_none() ? lookup_attribute_path(item, a.get(1)) : item;
    if (probe.is_list() || probe.is_dict()) render_fail("unhashable type: '" + type_name(probe) + "'");
    const Value key = case_folded(probe, case_sensitive);
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return equal(s, key); })) continue;
    seen.push_back(key);
    out.push_back(std::move(item));
  }
  return generator(std::move(out));
}

Value reverse(Interpreter&, const Value& input, CallArgs& args) {
  expect_no_arguments(args, "reverse");
  if (input.is_string()) {
    auto points = code_points(input.as_string());
    std::reverse(points.begin(), points.end());
    return from_code_points(points, 0, points.size());
  }
  const bool one_shot =
      input.is_list() && (input.as_list().kind == ListKind::generator || input.as_list().kind == ListKind::iterator);
  if (!input.is_undefined() && !input.is_list() && !input.is_dict()) render_fail("argument must be iterable");
  auto items = iterate(input);
  std::reverse(items.begin(), items.end());
  return Value::list(std::move(items), one_shot ? ListKind::list : ListKind::iterator);
}

// The sort key of jinja2's make_multi_attrgetter: one value, or a list for "a,b" attributes.
Value sort_key(const Value& item, const Value& attribute, bool case_sensitive) {
  if (attribute.is_none() || attribute.is_undefined()) return case_folded(item, case_sensitive);
  if (!attribute.is_string()) return case_folded(lookup_attribute_path(item, attribute), case_sensitive);
  std::vector<Value> parts;
  for (const auto& path : python_split(attribute.as_string(), std::string(","), -1, false))
    parts.push_back(case_folded(lookup_attribute_path(item, Value(path)), case_sensitive));
  return parts.size() == 1 ? parts[0] : Value::list(std::move(parts));
}

// Python's sorted(): stable, and stable for reverse=True too.
std::vector<Value> sorted_by(std::vector<Value> items, const std::vector<Value>& keys, bool descending) {
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
    return descending ? less_than(keys[y], keys[x]) : less_than(keys[x], keys[y]);
  });
  std::vector<Value> out;
  out.reserve(items.size());
  for (const size_t i : order) out.push_back(std::move(items[i]));
  return out;
}

Value sort(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "sort", {"reverse", "case_sensitive", "attribute"});
  auto values = iterate(input);
  std::vector<Value> keys;
  for (const auto& item : values) keys.push_back(sort_key(item, a.get(2), truthy(a.get(1))));
  return Value::list(sorted_by(std::move(values), keys, truthy(a.get(0))));
}

Value dictsort(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "dictsort", {"case_sensitive", "by", "reverse"});
  const std::string by = a.has(1) ? to_str(a.get(1)) : "key";
  if (by != "key" && by != "value") render_fail("You can only sort by either \"key\" or \"value\"");
  if (!input.is_dict()) render_fail("'" + type_name(input) + "' object has no attribute 'items'");
  std::vector<Value> pairs, keys;
  for (const auto& [key, value] : input.as_dict().entries) {
    pairs.push_back(Value::list({Value(key), value}, ListKind::tuple));
    keys.push_back(case_folded(by == "key" ? Value(key) : value, truthy(a.get(0))));
  }
  return Value::list(sorted_by(std::move(pairs), keys, truthy(a.get(2))));
}

Value sum(Interpreter&, const Value& input, CallArgs& args) {
  BoundArgs a(args, "sum", {"attribute", "start"});
  Value total = a.value_or(1, Value(int64_t{0}));
  for (const auto& item : iterate(input))
    total =
        binary_operation("+", total, a.has(0) && !a.get(0).is_none() ? lookup_attribute_path(item, a.get(0)) : item);
  return total;
}

Value min_or_max(const Value& input, CallArgs& args, bool largest) {
  BoundArgs a(args, largest ? "max" : "min", {"case_sensitive", "attribute"});
  const auto values = iterate(input);
  if (values.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const auto key = [&](const Value& item) {
    const Value probe = a.has(1) && !a.get(1).is_none() ? lookup_attribute_path(item, a.get(1)) : item;
    return case_folded(probe, truthy(a.get(0)));
  };
  size_t best = 0;
  Value best_key = key(values[0]);
  for (size_t i = 1; i < values.size(); ++i) {
    Value k = key(values[i]);
    if (largest ? less_than(best_key, k) : less_than(k, best_key)) best = i, best_key = std::move(k);
  }
  return values[best];
}

Value min(Interpreter&, const Value& input, CallArgs& args) { return min_or_max(input, args, false); }
Value max(Interpreter&, const Value& input, CallArgs& args) { return min_or_max(input, args, true); }

}  // namespace

void add_sequence_filters(FilterTable& t) {
  t["list"] = to_list;
  t["join"] = join;
  t["first"] = first;
  t["last"] = last;
  t["map"] = map;
  t["select"] = select;
  t["reject"] = reject;
  t["selectattr"] = selectattr;
  t["rejectattr"] = rejectattr;
  t["items"] = items;
  t["unique"] = unique;
  t["reverse"] = reverse;
  t["sort"] = sort;
  t["dictsort"] = dictsort;
  t["sum"] = sum;
  t["min"] = min;
  t["max"] = max;
}

}  // namespace qkd::chat
