#pragma once
// A Jinja template as Hugging Face chat templates use it, rendered like transformers renders one:
// jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
// extension (break/continue), transformers' `generation` tag, its json.dumps-based `tojson` filter and
// its raise_exception/strftime_now globals, plus jinja2's range/dict/namespace.
//
// Supported: {{ }}, {% %}, {# #} with `-`/`+` whitespace control; for (else, `if` filter, tuple
// unpacking, loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem/cycle/changed),
// if/elif/else, set (names, tuples, namespace attributes, block form), macro, call, filter, with,
// break, continue, generation, raw. Expressions as in Python, with slicing. Filters: abs capitalize
// count d default dictsort first float indent int items join last length list lower map max min
// reject rejectattr replace reverse round safe select selectattr sort string sum title tojson trim
// unique upper. Tests: jinja2's (defined, none, string, mapping, iterable, sequence, number, boolean,
// true, false, equalto/eq/==, in, odd, even, ...). Methods of str (strip, split, startswith, replace,
// format, ...), dict (get, items, keys, values) and list (index, count). Functions: range, dict,
// namespace, raise_exception, strftime_now. Anything else -- another filter, test, method, function
// or tag, *args/**kwargs, recursive loops -- fails in parse() with "<where> line N: unsupported ...".
//
// Rendering follows Python's semantics (str() of None is "None", 1.0 prints "1.0", len() counts code
// points, `+` of str and int fails) and jinja2's (undefined prints as "" but fails when used in
// arithmetic or attribute access; select/map return one-shot generators). Known gaps: integers are
// 64-bit (overflow fails), upper/lower use simple Unicode case mappings except for the common
// multi-letter ones, str.format has no format specs. render() is const and may run on several threads.
#include <ctime>
#include <functional>
#include <memory>
#include <string>

#include "qkd/chat/value.h"

namespace qkd::chat {

class Template {
 public:
  // Parses `source`; `where` names it in every error, e.g. "tokenizer_config.json: chat_template".
  static Template parse(const std::string& source, const std::string& where);

  // Renders with `variables` as the template's context. `now` is strftime_now's clock, the local
  // broken-down time (empty: the system clock). Fails with "<where> line N: <message>", where the
  // message of raise_exception(message) is the template's own text.
  std::string render(const Dict& variables, const std::function<std::tm()>& now = {}) const;

  const std::string& where() const;

 private:
  struct Parsed;
  std::shared_ptr<const Parsed> parsed_;
};

}  // namespace qkd::chat
