# Install layout and the Debian package (CPack's DEB generator).
#   cmake -S . -B B -DCMAKE_INSTALL_PREFIX=/usr && cmake --build B && (cd B && cpack)
# or, the documented way with the Debian build flags and for either architecture: install/build-deb amd64|arm64.
# Paths are those a Debian package uses: the units and the sysusers.d file in the vendor directories
# under /usr/lib, the profiles under /usr/share/spark-tune/policies (profile.cpp looks there).

set(SPARK_TUNE_UNIT_DIR "lib/systemd/system" CACHE STRING "systemd system units, relative to the prefix")
set(SPARK_TUNE_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING "sysusers.d, relative to the prefix")

install(FILES ${CMAKE_SOURCE_DIR}/install/spark-tune.service ${CMAKE_SOURCE_DIR}/install/spark-tune.socket
        DESTINATION ${SPARK_TUNE_UNIT_DIR} COMPONENT runtime)
install(FILES ${CMAKE_SOURCE_DIR}/install/sysusers.d/spark-tune.conf
        DESTINATION ${SPARK_TUNE_SYSUSERS_DIR} COMPONENT runtime)

# Debian package metadata.
set(SPARK_TUNE_DEB_RELEASE 1)
set(SPARK_TUNE_DEB_VERSION "${PROJECT_VERSION}-${SPARK_TUNE_DEB_RELEASE}")

# The architecture: the cross toolchain file says it (cmake/toolchain-arm64.cmake); else dpkg's own.
if(NOT SPARK_TUNE_DEB_ARCH)
  find_program(DPKG_PROGRAM dpkg)
  if(DPKG_PROGRAM)
    execute_process(COMMAND ${DPKG_PROGRAM} --print-architecture OUTPUT_VARIABLE SPARK_TUNE_DEB_ARCH
                    OUTPUT_STRIP_TRAILING_WHITESPACE)
  else()
    set(SPARK_TUNE_DEB_ARCH amd64)
  endif()
endif()

# /usr/share/doc/spark-tune: copyright and changelog.Debian.gz (gzip -9n: no name or time stamp, so
# the package is reproducible).
set(SPARK_TUNE_DOC_DIR "${CMAKE_INSTALL_DATADIR}/doc/spark-tune")
set(DEB_VERSION ${SPARK_TUNE_DEB_VERSION})
configure_file(${CMAKE_SOURCE_DIR}/install/debian/changelog.in ${CMAKE_BINARY_DIR}/debian/changelog.Debian @ONLY)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz
  COMMAND ${GZIP_PROGRAM} -9nkf ${CMAKE_BINARY_DIR}/debian/changelog.Debian
  DEPENDS ${CMAKE_BINARY_DIR}/debian/changelog.Debian VERBATIM)
add_custom_target(deb_changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz)
install(FILES ${CMAKE_SOURCE_DIR}/install/debian/copyright ${CMAKE_BINARY_DIR}/debian/changelog.Debian.gz
        DESTINATION ${SPARK_TUNE_DOC_DIR} COMPONENT runtime)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME spark-tune)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "spark-tune maintainers <maintainers@users.noreply.b-seed-af0bd32a.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "keeps model-serving hosts alive through model loads")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${SPARK_TUNE_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${SPARK_TUNE_DEB_ARCH})
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/spark-tune/spark-tune")
# Depends: computed from the binary by dpkg-shlibdeps, never listed by hand.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The one relation shlibdeps cannot see: libsystemd is opened at its first use (dlopen,
# agent/core/systemd_lazy.cpp: sd_notify, socket activation, the journal, transient scopes), so that
# a verb's start does not load it. Without it those calls fail as they do without systemd, so it is
# a Recommends, not a Depends (every host with systemd has it).
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "libsystemd0")
if(CMAKE_CROSSCOMPILING)
  # dpkg-shlibdeps finds the target's libraries in the sysroot (install/build-deb also points it at
  # the sysroot's dpkg database and the target's objdump).
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS
      ${CMAKE_SYSROOT}/lib/${CMAKE_LIBRARY_ARCHITECTURE} ${CMAKE_SYSROOT}/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
endif()
# No relation to systemd: its socket activation is used where it runs (every host spark-tune is
# for), and without it the CLI starts the agent itself; a container install stays small.
# The extended description (the synopsis is CPACK_PACKAGE_DESCRIPTION_SUMMARY): CPack indents
# it and turns an empty line into the " ." of a new paragraph.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "spark-tune tunes the kernel of GPU model-serving hosts (DGX Spark and other
unified-memory machines, multi-GPU workstations) for the time a model loads
and puts the host back exactly as it was afterwards: transactional sysctl
profiles, load windows with page-cache control, memory guards for servers in
cgroups of their own, fragmentation telemetry from eBPF, preflight and doctor.

Removing the package restores every value spark-tune changed.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/install/debian/postinst ${CMAKE_SOURCE_DIR}/install/debian/prerm
    ${CMAKE_SOURCE_DIR}/install/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_SOURCE_IGNORE_FILES "/build.*/;/\\\\.git/")
include(CPack)
