#include "profile/profile.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <sstream>

#include "core/fd.h"
#include "core/fs.h"

namespace spark::profile {

const std::vector<OptionInfo>& known_options() {
  static const std::vector<OptionInfo> options = {
      {"window.readahead", "size", "readahead of the devices behind the model files during a window"},
      {"window.cache", "text", "page-cache control during a window: evict, drop or off"},
      {"window.cache_interval", "duration", "how often the page-cache control runs"},
      {"window.ttl", "duration", "how long a window lasts at most"},
      {"window.mapped_budget", "text",
       "page cache the window's mapped files may hold before idle mappings are paged out: auto or a size"},
      {"window.read_ahead", "text",
       "bytes of a file read ahead of a mapped loader's reader (within the cache the window keeps): a size or off"},
      {"window.free_floor", "text", "a window's free-memory floor: SIZE or N% of RAM (see window.floor)"},
      {"window.available_floor", "text", "a window's MemAvailable floor: SIZE or N% of RAM (see window.floor)"},
      {"window.floor", "text",
       "when the profile's floors hold: unified (on a unified-memory host only, the default), on, off"},
      {"guard.host_floor", "text", "a guard's MemAvailable floor on a unified-memory host: SIZE, N% of RAM or off"},
      {"preflight.factor", "number", "host RAM needed per byte of model"},
      {"preflight.headroom", "size", "host RAM kept free on top of the model"},
      {"detector.stall_ms", "number", "a compaction/reclaim stall longer than this is a fragmentation_stall"},
      {"detector.flood_gib_per_s", "number", "page-cache growth rate that is a pagecache_flood"},
      {"detector.deep_seconds", "number",
       "seconds of deep mode (page allocations by order and task) the detector attaches on a "
       "fragmentation_stall or reclaim_storm; 0 = never"},
      {"detector.deep_cooldown_s", "number",
       "seconds after a deep-mode period before the detector may attach it again"},
  };
  return options;
}

namespace {

std::string where(const fs::path& file, const toml::source_region& src) {
  return file.filename().string() + ":" + std::to_string(src.begin.line);
}

// A TOML scalar as the text spark-tune resolves later ("200", "5G", "4% of ram").
std::optional<std::string> scalar_text(const toml::node& n) {
  if (auto v = n.as_integer()) return std::to_string(v->get());
  if (auto v = n.as_string()) return v->get();
  if (auto v = n.as_floating_point()) {
    std::ostringstream os;
    os << v->get();
    return os.str();
  }
  if (auto v = n.as_boolean()) return v->get() ? "1" : "0";
  return std::nullopt;
}

Result<SettingSpec> setting_from(const KeyInfo& key, const toml::node& n, const fs::path& file) {
  SettingSpec s{key, "", std::nullopt, std::nullopt, where(file, n.source())};
  if (auto t = n.as_table()) {
    for (auto&& [k, v] : *t) {
      auto text = scalar_text(v);
      std::string name(k.str());
      if (!text)
        return input_error(where(file, v.source()) + ": '" + key.name + "." + name + "' must be a number or a string");
      if (name == "value")
        s.raw = *text;
      else if (name == "min")
        s.min = *text;
      else if (name == "max")
        s.max = *text;
      else
        return input_error(where(file, v.source()) + ": unknown key '" + name + "' in " + key.name +
                           " (value, min, max)");
    }
    if (s.raw.empty()) return input_error(s.source + ": " + key.name + " needs a value");
    return s;
  }
  auto text = scalar_text(n);
  if (!text) return input_error(s.source + ": " + key.name + " must be a number, a string or { value, min, max }");
  s.raw = *text;
  return s;
}

// Flattens nested tables (TOML reads `vm.min_free_kbytes = 1` as table vm, key min_free_kbytes).
void flatten(const toml::table& t, const std::string& prefix,
             std::vector<std::pair<std::string, const toml::node*>>& out, bool keep_inline_tables) {
  for (auto&& [k, v] : t) {
    std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto sub = v.as_table(); sub && !(keep_inline_tables && sub->is_inline()))
      flatten(*sub, name, out, keep_inline_tables);
    else
      out.emplace_back(name, &v);
  }
}

}  // namespace

Result<void> check_profile_bytes(std::string_view text, const fs::path& file) {
  if (text.size() > k_max_profile_bytes)
    return sys_error(EFBIG, file.filename().string() + ": " + std::to_string(text.size()) +
                                " bytes; a profile is at most " + std::to_string(k_max_profile_bytes) + " bytes");
  // A small TOML lexer: strings (basic, literal, multi-line) and comments may hold any UTF-8;
  // everywhere else a profile is ASCII (keys, numbers, tables). toml++ itself must never see a
  // non-ASCII byte there: its unicode tables reach TOML_UNREACHABLE on some (U+0302).
  enum class In { code, comment, basic, literal, ml_basic, ml_literal } in = In::code;
  constexpr std::string_view k_ml_basic = "\"\"\"";
  constexpr std::string_view k_ml_literal = "'''";
  size_t line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (ch == '\n') ++line;
    switch (in) {
      case In::code:
        if (static_cast<unsigned char>(ch) >= 0x80)
          return input_error(file.filename().string() + ":" + std::to_string(line) +
                             ": a byte that is not ASCII outside a string or comment (quote the value: \"...\")");
        if (ch == '#') {
          in = In::comment;
        } else if (ch == '"') {
          in = text.substr(i, 3) == k_ml_basic ? In::ml_basic : In::basic;
          if (in == In::ml_basic) i += 2;
        } else if (ch == '\'') {
          in = text.substr(i, 3) == k_ml_literal ? In::ml_literal : In::literal;
          if (in == In::ml_literal) i += 2;
        }
        break;
      case In::comment:
        if (ch == '\n') in = In::code;
        break;
      case In::basic:
        if (ch == '\\') {
          if (i + 1 < text.size() && text[i + 1] == '\n') ++line;
          ++i;
        } else if (ch == '"' || ch == '\n') {
          in = In::code;  // an unterminated string is toml++'s error to report
        }
        break;
      case In::literal:
        if (ch == '\'' || ch == '\n') in = In::code;
        break;
      case In::ml_basic:
      case In::ml_literal: {
        if (in == In::ml_basic && ch == '\\') {
          if (i + 1 < text.size() && text[i + 1] == '\n') ++line;
          ++i;
          break;
        }
        std::string_view close = in == In::ml_basic ? k_ml_basic : k_ml_literal;
        if (text.substr(i, 3) == close) {
          // up to two more quotes belong to the string ("""a""""" is legal TOML)
          size_t j = i + 3;
          while (j < text.size() && j < i + 5 && text[j] == close[0]) ++j;
          i = j - 1;
          in = In::code;
        }
        break;
      }
    }
  }
  return {};
}

Result<std::string> read_profile_text(const fs::path& file) {
  // O_NONBLOCK: a FIFO opens without waiting for a writer (and is then refused, not read).
  int fd = ::open(file.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    if (errno == ENOENT) return sys_error(ENOENT, "no profile file " + file.string());
    return errno_error("opening the profile " + file.string());
  }
  Fd closer(fd);  // closed on every return
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error("reading the profile " + file.string());
  if (!S_ISREG(st.st_mode))
    return sys_error(EINVAL, file.string() +
                                 " is not a regular file (a FIFO, a device or a directory): a profile is "
                                 "a TOML file; copy it to a file and give that");
  if (st.st_size > static_cast<off_t>(k_max_profile_bytes))
    return sys_error(EFBIG, file.string() + " has " + std::to_string(st.st_size) + " bytes; a profile is at most " +
                                std::to_string(k_max_profile_bytes) + " bytes");
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("reading the profile " + file.string());
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > k_max_profile_bytes)  // it grew while read
      return sys_error(EFBIG,
                       file.string() + ": a profile is at most " + std::to_string(k_max_profile_bytes) + " bytes");
  }
  return out;
}

Result<Profile> parse_profile(const std::string& text, const std::string& name, const fs::path& file) {
  SPARK_TRY_VOID(check_profile_bytes(text, file));
  toml::table root;
  try {
    root = toml::parse(text, file.string());
  } catch (const toml::parse_error& e) {
    return input_error(file.filename().string() + ":" + std::to_string(e.source().begin.line) + ": " +
                       std::string(e.description()));
  }
  Profile p;
  p.name = name;
  p.file = file;
  std::set<std::string> seen;
  for (auto&& [section_key, section] : root) {
    std::string section_name(section_key.str());
    auto* table = section.as_table();
    if (!table)
      return input_error(where(file, section.source()) + ": unknown top-level key '" + section_name +
                         "' (use a [section])");
    if (section_name == "profile") {
      for (auto&& [k, v] : *table) {
        std::string key(k.str());
        auto s = v.as_string();
        if (!s) return input_error(where(file, v.source()) + ": profile." + key + " must be a string");
        if (key == "description")
          p.description = s->get();
        else if (key == "inherit")
          p.inherit = s->get();
        else if (key == "name") {
          if (s->get() != name)
            return input_error(where(file, v.source()) + ": profile.name '" + s->get() +
                               "' does not match the file name '" + name + "'");
        } else
          return input_error(where(file, v.source()) + ": unknown key 'profile." + key +
                             "' (description, inherit, name)");
      }
    } else if (section_name == "sysctl" || section_name == "thp") {
      std::vector<std::pair<std::string, const toml::node*>> entries;
      for (auto&& [k, v] : *table) {
        std::string key(k.str());
        if (section_name == "sysctl" && key == "extra") {
          auto* extra = v.as_table();
          if (!extra) return input_error(where(file, v.source()) + ": sysctl.extra must be a table");
          std::vector<std::pair<std::string, const toml::node*>> xs;
          flatten(*extra, "", xs, true);
          for (auto& [xname, node] : xs) {
            if (find_key(xname))
              return input_error(where(file, node->source()) + ": '" + xname +
                                 "' is a known key: set it in [sysctl], not [sysctl.extra]");
            auto info = extra_key(xname);
            if (!info) return input_error(where(file, node->source()) + ": " + info.error().what());
            SPARK_TRY(auto spec, setting_from(*info, *node, file));
            if (!seen.insert(xname).second) return input_error(spec.source + ": '" + xname + "' is set twice");
            p.settings.push_back(std::move(spec));
          }
          continue;
        }
        if (auto sub = v.as_table(); sub && !sub->is_inline()) {
          std::vector<std::pair<std::string, const toml::node*>> xs;
          flatten(*sub, key, xs, true);
          entries.insert(entries.end(), xs.begin(), xs.end());
        } else {
          entries.emplace_back(key, &v);
        }
      }
      // toml++ keeps tables sorted by key; settings keep the order of the file.
      std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
        return a.second->source().begin.line < b.second->source().begin.line;
      });
      for (auto& [key, node] : entries) {
        std::string full = section_name == "thp" ? "thp." + key : key;
        const KeyInfo* info = find_key(full);
        if (!info)
          return input_error(where(file, node->source()) + ": unknown key '" + full +
                             "' (see `spark-tune profile keys`; other vm.*/kernel.* keys go in [sysctl.extra])");
        SPARK_TRY(auto spec, setting_from(*info, *node, file));
        if (!seen.insert(full).second) return input_error(spec.source + ": '" + full + "' is set twice");
        p.settings.push_back(std::move(spec));
      }
    } else if (section_name == "window" || section_name == "preflight" || section_name == "detector") {
      for (auto&& [k, v] : *table) {
        std::string full = section_name + "." + std::string(k.str());
        auto it = std::find_if(known_options().begin(), known_options().end(),
                               [&](const OptionInfo& o) { return full == o.name; });
        if (it == known_options().end()) return input_error(where(file, v.source()) + ": unknown key '" + full + "'");
        auto text = scalar_text(v);
        if (!text) return input_error(where(file, v.source()) + ": " + full + " must be a number or a string");
        p.options[full] = *text;
      }
    } else {
      return input_error(where(file, section.source()) + ": unknown section [" + section_name +
                         "] (profile, sysctl, thp, window, preflight, detector)");
    }
  }
  return p;
}

Result<Profile> load_profile_file(const fs::path& file) {
  SPARK_TRY(std::string text, read_profile_text(file));
  std::string name = file.stem().string();
  return parse_profile(text, name, file);
}

fs::path shipped_policy_dir() {
  if (const char* env = std::getenv("SPARK_TUNE_POLICY_DIR"); env && *env) return env;
  std::error_code ec;
  if (fs::is_directory(SPARK_TUNE_POLICY_DIR, ec)) return SPARK_TUNE_POLICY_DIR;
  return SPARK_TUNE_SOURCE_POLICY_DIR;
}

ProfileStore::ProfileStore(const HostPaths& paths) : dirs_{paths.etc / "profiles", shipped_policy_dir()} {}

Result<fs::path> ProfileStore::locate(const std::string& name_or_path) const {
  if (name_or_path.find('/') != std::string::npos || (name_or_path.size() > 5 && name_or_path.ends_with(".toml"))) {
    if (!fs::exists(name_or_path)) return sys_error(ENOENT, "no profile file " + name_or_path);
    return fs::path(name_or_path);
  }
  for (char c : name_or_path)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'))
      return input_error("'" + name_or_path + "' is not a profile name (letters, digits, '-', '_'), nor a path");
  for (const auto& d : dirs_) {
    fs::path f = d / (name_or_path + ".toml");
    std::error_code ec;
    if (fs::is_regular_file(f, ec)) return f;
  }
  std::string msg = "no profile named '" + name_or_path + "' (looked in";
  for (const auto& d : dirs_) msg += " " + d.string();
  return sys_error(ENOENT, msg + "); see `spark-tune profile list`");
}

Result<std::vector<Profile>> ProfileStore::load_chain(const std::string& name_or_path) const {
  std::vector<Profile> chain;
  std::set<std::string> visited;
  std::string next = name_or_path;
  while (!next.empty()) {
    SPARK_TRY(fs::path file, locate(next));
    std::string key = fs::weakly_canonical(file).string();
    if (!visited.insert(key).second) return input_error("profile inheritance loops back to " + file.string());
    SPARK_TRY(Profile p, load_profile_file(file));
    next = p.inherit;
    chain.insert(chain.begin(), std::move(p));
  }
  return chain;
}

std::vector<std::pair<std::string, fs::path>> ProfileStore::list() const {
  std::vector<std::pair<std::string, fs::path>> out;
  for (const auto& d : dirs_) {
    std::error_code ec;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.path().extension() == ".toml") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) {
      std::string name = f.stem().string();
      if (std::none_of(out.begin(), out.end(), [&](const auto& p) { return p.first == name; }))
        out.emplace_back(name, f);
    }
  }
  return out;
}

}  // namespace spark::profile
