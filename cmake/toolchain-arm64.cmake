# Cross build for arm64 (aarch64) on an amd64 Debian host: Debian's cross compiler
# (crossbuild-essential-arm64) against an arm64 sysroot made by install/arm64-sysroot.
#   SPARK_TUNE_SYSROOT=$(install/arm64-sysroot) cmake -S . -B B -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-arm64.cmake
# install/build-deb arm64 does all of it. The sysroot comes from the environment so that every
# try_compile (which re-reads this file) sees it too.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

if(NOT DEFINED ENV{SPARK_TUNE_SYSROOT} OR NOT IS_DIRECTORY "$ENV{SPARK_TUNE_SYSROOT}")
  message(FATAL_ERROR "SPARK_TUNE_SYSROOT must name the arm64 sysroot (install/arm64-sysroot prints it)")
endif()
set(CMAKE_SYSROOT "$ENV{SPARK_TUNE_SYSROOT}")

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Libraries, headers and CMake packages from the sysroot only; programs (bpftool, clang for the BPF
# objects, gzip) from the build host.
set(CMAKE_FIND_ROOT_PATH "${CMAKE_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the sysroot's .pc files and puts the sysroot in front of their paths.
set(ENV{PKG_CONFIG_LIBDIR}
    "${CMAKE_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${CMAKE_SYSROOT}/usr/share/pkgconfig:${CMAKE_SYSROOT}/usr/lib/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${CMAKE_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")

set(SPARK_TUNE_DEB_ARCH arm64 CACHE STRING "Debian architecture of the package")
