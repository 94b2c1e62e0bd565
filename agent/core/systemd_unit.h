// systemd units as spark-tune writes drop-ins for them (guard --unit, protect): one name
// normaliser and one drop-in verifier (`systemd-analyze verify`, fork/exec with an argv).
#pragma once

#include <string>
#include <vector>

#include "core/result.h"

namespace spark {

// "llama" -> "llama.service", "user.slice" stays: checked against systemd's character set, and a
// name whose type (the suffix) is not among `types` is refused. `who` names the asker in messages
// ("--unit", "protect").
Result<std::string> normalize_unit_name(const std::string& name, const std::vector<std::string>& types,
                                        const std::string& who);

// Runs `systemd-analyze verify` on `unit` (its text: the real unit file or a stub) with the drop-in
// `dropin_name` holding `dropin_text`, both in a temporary directory that systemd searches first.
// Anything systemd says against the drop-in or the unit, or a failed verify, is an EINVAL error that
// quotes it ("systemd-analyze verify rejects the drop-in for llama.service: ..."); ENOENT when
// systemd-analyze is not installed.
Result<void> verify_dropin(const std::string& unit, const std::string& unit_text, const std::string& dropin_name,
                           const std::string& dropin_text);

}  // namespace spark
