# Sourced by test.sh (stage boot1): protect UNIT, read back by systemd.
cat >/etc/systemd/system/vmtest-editor.service <<'UNIT'
[Service]
ExecStart=/bin/sleep infinity
UNIT
systemctl daemon-reload; systemctl start vmtest-editor.service
check "protect vmtest-editor" st protect vmtest-editor --memory-min 64M --memory-low 128M
systemctl daemon-reload && systemctl restart vmtest-editor.service  # as protect says next
show=$(systemctl show -p MemoryMin,MemoryLow,OOMScoreAdjust,ManagedOOMPreference vmtest-editor.service | tr '\n' ' ')
echo "$show"
[[ "$show" == *MemoryMin=67108864* && "$show" == *MemoryLow=134217728* && "$show" == *OOMScoreAdjust=-900* && "$show" == *ManagedOOMPreference=avoid* ]] &&
  pass "protect: systemctl show reads MemoryMin, MemoryLow, OOMScoreAdjust, ManagedOOMPreference" ||
  fail "protect: systemctl show" "$show"
cg=$(systemctl show -p ControlGroup --value vmtest-editor.service)
[ "$(cat /sys/fs/cgroup$cg/memory.min 2>/dev/null)" = 67108864 ] && pass "protect: memory.min in force in the unit's cgroup" ||
  fail "protect: memory.min in force" "memory.min=$(cat /sys/fs/cgroup$cg/memory.min 2>&1)"
check "protect --undo" st protect --undo vmtest-editor
systemctl daemon-reload
[ "$(systemctl show -p MemoryMin --value vmtest-editor.service)" = 0 ] && pass "protect --undo: MemoryMin back to 0" ||
  fail "protect --undo" "MemoryMin=$(systemctl show -p MemoryMin --value vmtest-editor.service)"
systemctl stop vmtest-editor.service; rm -f /etc/systemd/system/vmtest-editor.service; systemctl daemon-reload
