# Compile a CO-RE BPF program with clang and generate its libbpf skeleton with bpftool.
#   bpf_skeleton(NAME <name> SOURCE <file.bpf.c>)
# produces ${CMAKE_CURRENT_BINARY_DIR}/<name>.skel.h and an INTERFACE target bpf_<name>.
find_program(BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

# The target architecture (a cross build's toolchain file sets CMAKE_SYSTEM_PROCESSOR): its
# __TARGET_ARCH_<arch> for bpf_tracing.h and its vmlinux.h, pinned in the tree per architecture
# (bpf/vmlinux/README.md: generated once from a named Debian kernel's BTF). Never the build
# machine's own BTF: an arm64 package built on amd64 carries arm64 objects, and CO-RE relocates
# them on the kernel of the host they run on.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|amd64|AMD64)$")
  set(BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
  set(BPF_ARCH arm64)
else()
  message(FATAL_ERROR "no pinned vmlinux.h for ${CMAKE_SYSTEM_PROCESSOR} (bpf/vmlinux/README.md says how to add one)")
endif()
set(BPF_VMLINUX_DIR ${CMAKE_SOURCE_DIR}/bpf/vmlinux/${BPF_ARCH})
set(BPF_VMLINUX_H ${BPF_VMLINUX_DIR}/vmlinux.h)
message(STATUS "BPF programs: __TARGET_ARCH_${BPF_ARCH}, ${BPF_VMLINUX_H}")

# Every header next to the programs (events.h, mm_events.h, ...): a change rebuilds the objects.
file(GLOB BPF_SHARED_HEADERS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/bpf/*.h)

function(bpf_skeleton)
  cmake_parse_arguments(B "" "NAME;SOURCE" "" ${ARGN})
  set(obj ${CMAKE_CURRENT_BINARY_DIR}/${B_NAME}.bpf.o)
  set(skel ${CMAKE_CURRENT_BINARY_DIR}/${B_NAME}.skel.h)
  get_filename_component(src ${B_SOURCE} ABSOLUTE)
  add_custom_command(OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_${BPF_ARCH}
            -I${BPF_VMLINUX_DIR} -I${CMAKE_SOURCE_DIR}/bpf -c ${src} -o ${obj}
    DEPENDS ${src} ${BPF_VMLINUX_H} ${BPF_SHARED_HEADERS}
    COMMENT "BPF ${B_NAME}" VERBATIM)
  add_custom_command(OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${B_NAME} > ${skel}
    DEPENDS ${obj} COMMENT "skeleton ${B_NAME}" VERBATIM)
  add_custom_target(bpf_${B_NAME}_skel DEPENDS ${skel})
  add_library(bpf_${B_NAME} INTERFACE)
  add_dependencies(bpf_${B_NAME} bpf_${B_NAME}_skel)
  target_include_directories(bpf_${B_NAME} INTERFACE ${CMAKE_CURRENT_BINARY_DIR} ${CMAKE_SOURCE_DIR}/bpf)
endfunction()
