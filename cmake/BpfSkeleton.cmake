# Compile a CO-RE BPF program with clang and generate its libbpf skeleton with bpftool.
#   bpf_skeleton(NAME <name> SOURCE <file.bpf.c>)
# produces ${CMAKE_CURRENT_BINARY_DIR}/<name>.skel.h and an INTERFACE target bpf_<name>.
find_program(BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

set(BPF_VMLINUX_DIR ${CMAKE_BINARY_DIR}/bpf-include)
set(BPF_VMLINUX_H ${BPF_VMLINUX_DIR}/vmlinux.h)
# vmlinux.h: the type information of the build machine's kernel (CO-RE relocates it at load time).
if(NOT EXISTS /sys/kernel/btf/vmlinux)
  message(FATAL_ERROR "no /sys/kernel/btf/vmlinux: the BPF programs need the kernel's BTF to build")
endif()
if(NOT EXISTS ${BPF_VMLINUX_H})
  file(MAKE_DIRECTORY ${BPF_VMLINUX_DIR})
  execute_process(COMMAND ${BPFTOOL} btf dump file /sys/kernel/btf/vmlinux format c
                  OUTPUT_FILE ${BPF_VMLINUX_H} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE ${BPF_VMLINUX_H})
    message(FATAL_ERROR "bpftool could not dump the kernel's BTF into vmlinux.h")
  endif()
endif()

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64")
  set(BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64")
  set(BPF_ARCH arm64)
else()
  set(BPF_ARCH ${CMAKE_SYSTEM_PROCESSOR})
endif()

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
