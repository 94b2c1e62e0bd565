#include "state/journal.h"

#include <sys/stat.h>

#include <algorithm>

namespace spark {

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

const TargetRecord* JournalData::find(const Target& t) const {
  return const_cast<JournalData*>(this)->find(t);
}

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

nlohmann::json to_json(const JournalData& d) {
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& r : d.targets) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : r.layers)
      layers.push_back({{"owner", l.owner}, {"previous", opt_json(l.previous)}, {"value", opt_json(l.value)},
                        {"reason", l.reason}});
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

Result<JournalData> read_journal(const HostPaths& paths) {
  auto text = read_file(paths.journal_file());
  if (!text) {
    if (text.error().code().value() == ENOENT) return JournalData{};
    return text.error();
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded())
    return sys_error(EBADMSG, "journal " + paths.journal_file().string() + " is not valid JSON (keep it for inspection)");
  return journal_from_json(j);
}

Result<JournalTxn> JournalTxn::begin(const HostPaths& paths) {
  SPARK_TRY_VOID(ensure_state_dir(paths));
  SPARK_TRY(FileLock lock, FileLock::acquire(paths.lock_file()));
  JournalTxn txn(paths, std::move(lock));
  SPARK_TRY(txn.data_, read_journal(paths));
  auto boot = read_value(paths.boot_id_file());
  txn.boot_id_ = boot ? *boot : "";
  if (txn.data_.boot_id.empty()) txn.data_.boot_id = txn.boot_id_;
  txn.earlier_boot_ = !txn.data_.empty() && !txn.boot_id_.empty() && txn.data_.boot_id != txn.boot_id_;
  return txn;
}

Result<void> JournalTxn::commit() {
  if (data_.empty()) return remove_file(paths_.journal_file());
  data_.boot_id = boot_id_.empty() ? data_.boot_id : boot_id_;
  return atomic_write(paths_.journal_file(), to_json(data_).dump(1) + "\n", 0600);
}

}  // namespace spark
