# Cross build for AArch64 Linux (Kunpeng servers, the hosts of Atlas 300I / Ascend 310P cards) with Debian's
# cross compiler and multiarch packages, no sysroot:
#
#   sudo dpkg --add-architecture arm64 && sudo apt-get update
#   sudo apt-get install crossbuild-essential-arm64 qemu-user \
#        libsentencepiece-dev:arm64 libjsoncpp-dev:arm64 libcmocka-dev:arm64 libgtest-dev:arm64
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=toolchains/aarch64-linux-gnu.cmake
#   cmake --build build-aarch64 -j"$(nproc)"
#   ctest --test-dir build-aarch64        # runs the AArch64 test programs under qemu-user
#
# The arm64 libraries and their pkg-config files live in /usr/lib/aarch64-linux-gnu, the C runtime in
# /usr/aarch64-linux-gnu. Override a compiler with -DCMAKE_C_COMPILER=... / -DCMAKE_CXX_COMPILER=... if needed.
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

# Headers and libraries: the cross C runtime under /usr/aarch64-linux-gnu and the multiarch packages under
# /usr (found in lib/aarch64-linux-gnu first, through CMAKE_LIBRARY_ARCHITECTURE). Programs (cmake, pkg-config,
# doxygen) are the build machine's.
set(CMAKE_FIND_ROOT_PATH /usr/${PANGU_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config sees only the arm64 .pc files (plus architecture-independent ones), never the build machine's.
# PKG_CONFIG_PATH, if set, is still searched first (e.g. for libraries installed under another prefix).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${PANGU_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)

# ctest runs the test programs under qemu-user; -L finds the AArch64 dynamic loader and C runtime.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/${PANGU_CROSS_TRIPLE})
