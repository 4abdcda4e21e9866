# Cross build for AArch64 Linux (Kunpeng servers, the hosts of Atlas 300I / Ascend 310P cards) with Debian's
# cross compiler. The arm64 libraries come from either of two places:
#
# 1. Multiarch packages installed the normal way (they land in /usr/lib/aarch64-linux-gnu):
#
#   sudo dpkg --add-architecture arm64 && sudo apt-get update
#   sudo apt-get install crossbuild-essential-arm64 qemu-user \
#        libsentencepiece-dev:arm64 libjsoncpp-dev:arm64 libcmocka-dev:arm64 libgtest-dev:arm64
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake -DPANGU_BUILD_BENCH=OFF
#   cmake --build build-aarch64 -j"$(nproc)"
#   ctest --test-dir build-aarch64        # runs the AArch64 test programs under qemu-user
#
# 2. arm64 .debs unpacked with `dpkg-deb -x` into a directory DIR (so DIR/usr/lib/aarch64-linux-gnu holds the
#    libraries), with the prefixes in their .pc files pointing into DIR: pass -DPANGU_AARCH64_DEPS=DIR (or set
#    the environment variable PANGU_AARCH64_DEPS for the first cmake run). scripts/cross-test.sh does this in
#    build-aarch64-deps/. Debian 12's libsentencepiece0 is not co-installable across architectures, so this is
#    the way on a machine whose native build needs the amd64 one.
#
# The C runtime is the cross toolchain's, in /usr/aarch64-linux-gnu. Override a compiler with
# -DCMAKE_C_COMPILER=... / -DCMAKE_CXX_COMPILER=... if needed.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(PANGU_CROSS_TRIPLE aarch64-linux-gnu)
if(NOT CMAKE_C_COMPILER)
  set(CMAKE_C_COMPILER ${PANGU_CROSS_TRIPLE}-gcc)
endif()
if(NOT CMAKE_CXX_COMPILER)
  set(CMAKE_CXX_COMPILER ${PANGU_CROSS_TRIPLE}-g++)
endif()
set(CMAKE_LIBRARY_ARCHITECTURE ${PANGU_CROSS_TRIPLE})

# The unpacked-packages directory is remembered in the cache, so later cmake runs need not repeat it; the
# compiler checks (try_compile projects) read this file again and get it through the platform variables.
if(NOT PANGU_AARCH64_DEPS AND DEFINED ENV{PANGU_AARCH64_DEPS})
  set(PANGU_AARCH64_DEPS "$ENV{PANGU_AARCH64_DEPS}")
endif()
set(PANGU_AARCH64_DEPS "${PANGU_AARCH64_DEPS}" CACHE PATH
    "Directory into which arm64 .debs were unpacked (empty: multiarch packages in /usr/lib/${PANGU_CROSS_TRIPLE})")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES PANGU_AARCH64_DEPS)

# Headers and libraries: the cross C runtime under /usr/aarch64-linux-gnu, the unpacked packages if any, and
# the multiarch packages under /usr (found in lib/aarch64-linux-gnu first, through CMAKE_LIBRARY_ARCHITECTURE).
# Programs (cmake, pkg-config, doxygen) are the build machine's.
set(CMAKE_FIND_ROOT_PATH /usr/${PANGU_CROSS_TRIPLE} ${PANGU_AARCH64_DEPS})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config sees only the arm64 .pc files (plus architecture-independent ones), never the build machine's.
# PKG_CONFIG_PATH, if set, is still searched first (e.g. for libraries installed under another prefix).
set(_pangu_pc /usr/lib/${PANGU_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)
set(_pangu_qemu qemu-aarch64 -L /usr/${PANGU_CROSS_TRIPLE})
if(PANGU_AARCH64_DEPS)
  set(_pangu_deps_lib ${PANGU_AARCH64_DEPS}/usr/lib/${PANGU_CROSS_TRIPLE})
  set(_pangu_pc ${_pangu_deps_lib}/pkgconfig:${PANGU_AARCH64_DEPS}/usr/share/pkgconfig:${_pangu_pc})
  # The linker must find the libraries' own dependencies (libsentencepiece.so.0 behind libpangu_c.so) when it
  # links a program; the cross linker searches only its default directories for those.
  string(APPEND CMAKE_EXE_LINKER_FLAGS_INIT " -Wl,-rpath-link,${_pangu_deps_lib}")
  string(APPEND CMAKE_SHARED_LINKER_FLAGS_INIT " -Wl,-rpath-link,${_pangu_deps_lib}")
  # The dynamic loader under qemu looks in the -L root and then the real /usr/lib/aarch64-linux-gnu, not DIR.
  list(APPEND _pangu_qemu -E LD_LIBRARY_PATH=${_pangu_deps_lib})
endif()
set(ENV{PKG_CONFIG_LIBDIR} ${_pangu_pc})

# ctest runs the test programs under qemu-user; -L finds the AArch64 dynamic loader and C runtime.
set(CMAKE_CROSSCOMPILING_EMULATOR ${_pangu_qemu})
