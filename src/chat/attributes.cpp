#include "attributes.h"

#include "operators.h"
#include "qkd/chat/python_text.h"
#include "template_error.h"

namespace qkd::chat {

namespace {

Value no_attribute(const Value& object, const std::string& name) {
  return Value::undefined(python_string_repr(object_description(object)) + " has no attribute " +
                          python_string_repr(name));
}

Value no_element(const Value& object, const Value& key) {
  return Value::undefined(object_description(object) + " has no element " + to_repr(key));
}

bool is_index(const Value& v) { return v.kind() == Kind::integer || v.kind() == Kind::boolean; }
int64_t index_of(const Value& v) { return v.kind() == Kind::boolean ? int64_t{v.as_bool()} : v.as_int(); }

bool is_subscriptable_sequence(const Value& v) {
  return v.is_list() && (v.as_list().kind == ListKind::list || v.as_list().kind == ListKind::tuple ||
                         v.as_list().kind == ListKind::range);
}

// Python's slice.indices(): the start, stop and step actually walked for a sequence of `length`.
void slice_indices(const Value& start, const Value& stop, const Value& step, int64_t length, int64_t& first,
                   int64_t& last, int64_t& stride) {
  for (const Value* v : {&start, &stop, &step}) {
    if (!v->is_none() && !is_index(*v))
      render_fail("slice indices must be integers or None or have an __index__ method");
  }
  stride = step.is_none() ? 1 : index_of(step);
  if (stride == 0) render_fail("slice step cannot be zero");
  const int64_t lower = stride < 0 ? -1 : 0;
  const int64_t upper = stride < 0 ? length - 1 : length;
  const auto clamp = [&](const Value& bound, int64_t fallback) {
    if (bound.is_none()) return fallback;
    int64_t i = index_of(bound);
    if (i < 0) i += length;
    return i < lower ? lower : (i > upper ? upper : i);
  };
  first = clamp(start, stride < 0 ? upper : lower);
  last = clamp(stop, stride < 0 ? lower : upper);
}

template <typename Take>
void walk_slice(int64_t first, int64_t last, int64_t stride, Take take) {
  if (stride > 0) {
    for (int64_t i = first; i < last; i += stride) take(static_cast<size_t>(i));
  } else {
    for (int64_t i = first; i > last; i += stride) take(static_cast<size_t>(i));
  }
}

Value string_element(const std::string& text, const Value& key) {
  int64_t i = index_of(key);
  if (is_ascii(text)) {
    const auto length = static_cast<int64_t>(text.size());
    if (i < 0) i += length;
    if (i < 0 || i >= length) return no_element(Value(text), key);
    return std::string(1, text[static_cast<size_t>(i)]);
  }
  const auto points = code_points(text);
  const auto length = static_cast<int64_t>(points.size());
  if (i < 0) i += length;
  if (i < 0 || i >= length) return no_element(Value(text), key);
  return from_code_points(points, static_cast<size_t>(i), static_cast<size_t>(i) + 1);
}

}  // namespace

Value get_attribute(const Value& object, const std::string& name) {
  switch (object.kind()) {
    case Kind::undefined: fail_undefined(object);
    case Kind::namespace_object: {
      const Value* v = object.as_namespace().attributes.find(name);
      return v ? *v : no_attribute(object, name);
    }
    case Kind::dict: {
      if (auto method = bound_method(object, name)) return *method;
      if (is_other_dict_attribute(name)) return Value::undefined("unsupported: dict attribute '" + name + "'");
      const Value* v = object.as_dict().find(name);
      return v ? *v : no_attribute(object, name);
    }
    default: {
      if (auto method = bound_method(object, name)) return *method;
      return no_attribute(object, name);
    }
  }
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) fail_undefined(object);
  if (object.is_dict() && key.is_string()) {
    if (const Value* v = object.as_dict().find(key.as_string())) return *v;
  } else if (is_subscriptable_sequence(object) && is_index(key)) {
    const auto& items = object.as_list().items;
    int64_t i = index_of(key);
    if (i < 0) i += static_cast<int64_t>(items.size());
    if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[static_cast<size_t>(i)];
    return no_element(object, key);
  } else if (object.is_string() && is_index(key)) {
    Value element = string_element(object.as_string(), key);
    return object.is_markup() && element.is_string() ? Value::markup(element.as_string()) : element;
  }
  // jinja2 falls back to the attribute when the item lookup fails and the key is a string.
  if (key.is_string()) {
    if (object.kind() == Kind::namespace_object || !object.is_dict()) return get_attribute(object, key.as_string());
    if (auto method = bound_method(object, key.as_string())) return *method;
    return no_attribute(object, key.as_string());
  }
  return no_element(object, key);
}

Value get_slice(const Value& object, const Value& start, const Value& stop, const Value& step) {
  if (object.is_undefined()) fail_undefined(object);
  int64_t first = 0, last = 0, stride = 1;
  if (object.is_string()) {
    const std::string& text = object.as_string();
    std::string out;
    if (is_ascii(text)) {
      slice_indices(start, stop, step, static_cast<int64_t>(text.size()), first, last, stride);
      walk_slice(first, last, stride, [&](size_t i) { out += text[i]; });
    } else {
      const auto points = code_points(text);
      slice_indices(start, stop, step, static_cast<int64_t>(points.size()), first, last, stride);
      walk_slice(first, last, stride, [&](size_t i) { append_utf8(out, points[i]); });
    }
    return object.is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
  }
  if (!is_subscriptable_sequence(object)) return no_element(object, Value("slice"));
  const auto& items = object.as_list().items;
  slice_indices(start, stop, step, static_cast<int64_t>(items.size()), first, last, stride);
  std::vector<Value> out;
  walk_slice(first, last, stride, [&](size_t i) { out.push_back(items[i]); });
  const ListKind kind = object.as_list().kind == ListKind::tuple ? ListKind::tuple : ListKind::list;
  return Value::list(std::move(out), kind);
}

}  // namespace qkd::chat
