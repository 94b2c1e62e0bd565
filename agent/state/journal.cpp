#include "state/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "core/fd.h"

namespace spark::state {

namespace {

nlohmann::json opt_json(const std::optional<std::string>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }
std::optional<std::string> opt_from(const nlohmann::json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<std::string>();
}

}  // namespace

TargetRecord* JournalData::find(const Target& t) {
  for (auto& r : targets)
    if (r.target == t) return &r;
  return nullptr;
}

const TargetRecord* JournalData::find(const Target& t) const { return const_cast<JournalData*>(this)->find(t); }

std::vector<std::string> JournalData::owner_names() const {
  std::vector<std::string> names;
  auto add = [&](const std::string& n) {
    if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
  };
  for (const auto& r : targets)
    for (const auto& l : r.layers) add(l.owner);
  for (auto it = owners.begin(); it != owners.end(); ++it) add(it.key());
  return names;
}

bool boot_scoped(const HostPaths& paths, const Target& t) {
  if (t.kind == TargetKind::file) return false;
  if (t.kind != TargetKind::dir) return true;
  auto rel = fs::path(t.name).lexically_relative(paths.cgroup);
  return !rel.empty() && *rel.begin() != "..";
}

namespace {

bool holds_persistent(const HostPaths& paths, const JournalData& d) {
  return std::any_of(d.targets.begin(), d.targets.end(),
                     [&](const TargetRecord& r) { return !boot_scoped(paths, r.target); });
}

// Replaces the journal atomically without freeing the old file's blocks. Measured in the soak
// (bench/agent_soak, issue 13): on a file system mounted with online discard, the rename of a
// temp file over the journal evicted the old inode, and freeing its blocks waited for the
// device's discard -- a third of the agent loop's waits, ~100 ms each under load. So the new
// content goes into a spare file (the previous journal's inode, kept linked), padded with spaces
// to the spare's size (JSON allows trailing whitespace; the file never shrinks, no block is
// freed), and the rename leaves the old journal linked as the next spare. Durable: the spare is
// fsync'd before the rename and the directory after.
Result<void> replace_journal(const fs::path& path, std::string& content, bool durable) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
    return sys_error(ELOOP, "refusing to replace symlink " + path.string());
  fs::path spare = path, next = path;
  spare += ".spare";
  next += ".spare.next";
  {
    Fd f(::open(spare.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!f.valid()) return errno_error("creating " + spare.string());
    if (::fchmod(f.get(), 0600) != 0) return errno_error("chmod " + spare.string());
    struct stat sst {};
    if (::fstat(f.get(), &sst) != 0) return errno_error("stat " + spare.string());
    size_t old_size = static_cast<size_t>(sst.st_size);
    if (old_size > content.size() && old_size > 4 * content.size() + (64u << 10)) {
      if (::ftruncate(f.get(), static_cast<off_t>(content.size())) != 0)
        return errno_error("truncating " + spare.string());
    } else if (old_size > content.size()) {
      content.append(old_size - content.size(), ' ');
    }
    for (size_t off = 0; off < content.size();) {
      ssize_t n = ::pwrite(f.get(), content.data() + off, content.size() - off, static_cast<off_t>(off));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno_error("writing " + spare.string());
      off += static_cast<size_t>(n);
    }
    if (durable && ::fsync(f.get()) != 0) return errno_error("fsync " + spare.string());
  }
  ::unlink(next.c_str());  // left by a crash between the two renames
  bool linked = ::link(path.c_str(), next.c_str()) == 0;
  if (::rename(spare.c_str(), path.c_str()) != 0) {
    int e = errno;
    if (linked) ::unlink(next.c_str());
    return sys_error(e, "renaming " + spare.string() + " to " + path.string());
  }
  if (linked) (void)::rename(next.c_str(), spare.c_str());
  if (durable) {
    Fd d(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!d.valid() || ::fsync(d.get()) != 0) return errno_error("fsync " + path.parent_path().string());
  }
  return {};
}

}  // namespace

nlohmann::json to_json(const JournalData& d) {
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& r : d.targets) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : r.layers)
      layers.push_back(
          {{"owner", l.owner}, {"previous", opt_json(l.previous)}, {"value", opt_json(l.value)}, {"reason", l.reason}});
    targets.push_back({{"kind", target_kind_name(r.target.kind)}, {"name", r.target.name}, {"layers", layers}});
  }
  return {{"version", 1}, {"boot_id", d.boot_id}, {"targets", targets}, {"owners", d.owners}};
}

Result<JournalData> journal_from_json(const nlohmann::json& j) {
  try {
    if (j.value("version", 0) != 1) return input_error("journal has an unknown version");
    JournalData d;
    d.boot_id = j.value("boot_id", "");
    for (const auto& t : j.at("targets")) {
      TargetRecord r;
      SPARK_TRY(r.target.kind, parse_target_kind(t.at("kind").get<std::string>()));
      r.target.name = t.at("name").get<std::string>();
      for (const auto& l : t.at("layers"))
        r.layers.push_back({l.at("owner").get<std::string>(), opt_from(l.at("previous")), opt_from(l.at("value")),
                            l.value("reason", "")});
      d.targets.push_back(std::move(r));
    }
    if (j.contains("owners") && j["owners"].is_object()) d.owners = j["owners"];
    return d;
  } catch (const nlohmann::json::exception& e) {
    return sys_error(EBADMSG, std::string("journal is malformed: ") + e.what());
  }
}

Result<void> ensure_state_dir(const HostPaths& paths) {
  SPARK_TRY_VOID(ensure_dir(paths.state, 0700));
  struct stat st {};
  if (::lstat(paths.state.c_str(), &st) != 0) return errno_error("checking " + paths.state.string());
  if ((st.st_mode & 0022) != 0)
    return sys_error(EPERM, paths.state.string() + " is writable by others: run chmod 700 " + paths.state.string());
  return {};
}

namespace {

// The journal file's bytes; a missing file reads as none.
Result<std::string> journal_text(const HostPaths& paths) {
  auto text = read_file(paths.journal_file());
  if (!text && text.error().code().value() == ENOENT) return std::string();
  return text;
}

Result<JournalData> parse_journal(const HostPaths& paths, const std::string& text) {
  // Empty: a journal renamed into place without fsync (only this boot's values, see commit) and
  // a power loss before it reached the disk; those values went with the boot.
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return JournalData{};
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded())
    return sys_error(EBADMSG,
                     "journal " + paths.journal_file().string() + " is not valid JSON (keep it for inspection)");
  return journal_from_json(j);
}

}  // namespace

Result<JournalData> read_journal(const HostPaths& paths) {
  SPARK_TRY(std::string text, journal_text(paths));
  return parse_journal(paths, text);
}

Result<std::shared_ptr<const JournalData>> read_journal(const HostPaths& paths, JournalCache& cache) {
  SPARK_TRY(std::string text, journal_text(paths));
  if (cache.data && text == cache.text) return cache.data;
  SPARK_TRY(JournalData d, parse_journal(paths, text));
  cache.text = std::move(text);
  cache.data = std::make_shared<const JournalData>(std::move(d));
  return cache.data;
}

Result<JournalTxn> JournalTxn::begin(const HostPaths& paths, JournalCache* cache) {
  SPARK_TRY_VOID(ensure_state_dir(paths));
  SPARK_TRY(FileLock lock, FileLock::acquire(paths.lock_file()));
  JournalTxn txn(paths, std::move(lock));
  txn.cache_ = cache;
  if (cache) {
    SPARK_TRY(auto d, read_journal(paths, *cache));
    txn.data_ = *d;
    txn.read_ = std::move(d);
  } else {
    SPARK_TRY(txn.data_, read_journal(paths));
  }
  auto boot = read_value(paths.boot_id_file());
  txn.boot_id_ = boot ? *boot : "";
  if (txn.data_.boot_id.empty()) txn.data_.boot_id = txn.boot_id_;
  txn.earlier_boot_ = !txn.data_.empty() && !txn.boot_id_.empty() && txn.data_.boot_id != txn.boot_id_;
  txn.held_persistent_ = holds_persistent(paths, txn.data_);
  return txn;
}

Result<void> JournalTxn::commit() {
  if (data_.empty()) {
    // The spare (replace_journal) goes with the journal: an empty state directory is what a host
    // spark-tune never changed, or has put back entirely, looks like (issue 13).
    for (const char* suffix : {".spare", ".spare.next"}) {
      fs::path p = paths_.journal_file();
      p += suffix;
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) return errno_error("removing " + p.string());
    }
    if (cache_) *cache_ = JournalCache{};  // parsed again at the next read: the file is gone
    return remove_file(paths_.journal_file());
  }
  data_.boot_id = boot_id_.empty() ? data_.boot_id : boot_id_;
  bool durable = held_persistent_ || holds_persistent(paths_, data_);
  std::string content = to_json(data_).dump(1) + "\n";
  if (cache_) *cache_ = JournalCache{};  // a failed write leaves the file unknown: read it again
  SPARK_TRY_VOID(replace_journal(paths_.journal_file(), content, durable));
  if (cache_) *cache_ = JournalCache{std::move(content), std::make_shared<const JournalData>(data_)};
  return {};
}

}  // namespace spark::state
