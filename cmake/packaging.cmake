# SDK packages with CPack (docs/install.md#packages). `cpack` in the build directory, or
# `cmake --build build --target package`, makes
#
#   pangu_c-<version>-Linux-<processor>.tar.gz   everything `cmake --install` installs, under one top directory
#                                                (bin/, include/, lib/), relocatable
#   libpangu-c<major>_<version>_<arch>.deb       runtime: libpangu_c.so.<major> and libpangu_c.so.<version>
#   libpangu-c-dev_<version>_<arch>.deb          the header, the libpangu_c.so link, libpangu_c.a, pangu_c.pc
#                                                and the CMake package
#   pangu-tools_<version>_<arch>.deb             pangu-cli, pangu-perplexity and pangu-quantize
#
# The .deb packages install under /usr with the build's CMAKE_INSTALL_LIBDIR (lib for the default prefix;
# Debian's multiarch lib/<triplet> when configured with -DCMAKE_INSTALL_PREFIX=/usr). The split follows the
# install() rules' components: runtime, dev and tools. A native build computes the runtime and tools packages'
# dependencies with dpkg-shlibdeps; a cross build, where dpkg-shlibdeps cannot look at the target's libraries,
# states them (Debian 12's names). tests/install/run_package_test.sh checks all of it.

set(CPACK_PACKAGE_NAME ${PROJECT_NAME})
set(CPACK_PACKAGE_VENDOR "libpangu_c")
set(CPACK_PACKAGE_CONTACT "libpangu_c developers <dev@libpangu.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
# pangu_c-1.2.0-Linux-x86_64.tar.gz, pangu_c-1.2.0-Linux-aarch64.tar.gz for the cross build.
set(CPACK_SYSTEM_NAME ${CMAKE_SYSTEM_NAME}-${CMAKE_SYSTEM_PROCESSOR})
set(CPACK_GENERATOR TGZ DEB)
# Installed binaries are stripped, as Debian packages' are (the build tree keeps its debug information for the
# ABI gate).
set(CPACK_STRIP_FILES ON)
# `package_source` (not documented: `git archive` is the way to a source tarball) leaves out git and builds.
set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\\\.git/" "/build[^/]*/")

# The .tar.gz holds every component; the .deb generator makes one package per component.
set(CPACK_ARCHIVE_COMPONENT_INSTALL OFF)
set(CPACK_DEB_COMPONENT_INSTALL ON)

include(CPackComponent)
cpack_add_component(runtime DISPLAY_NAME "Runtime library"
  DESCRIPTION "libpangu_c.so.${PROJECT_VERSION_MAJOR}")
cpack_add_component(dev DISPLAY_NAME "Development files" DEPENDS runtime
  DESCRIPTION "Header, libpangu_c.so link, static library, pkg-config file and CMake package")
if(PANGU_BUILD_TOOLS)
  cpack_add_component(tools DISPLAY_NAME "Command-line tools" DEPENDS runtime
    DESCRIPTION "pangu-cli, pangu-perplexity and pangu-quantize")
endif()

# --- Debian packages
# Architecture: the build machine's dpkg architecture, or the target's for a cross build (override with
# -DPANGU_DEB_ARCHITECTURE=...).
set(_pangu_deb_arch "")
if(CMAKE_CROSSCOMPILING)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64)$")
    set(_pangu_deb_arch arm64)
  elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|amd64)$")
    set(_pangu_deb_arch amd64)
  endif()
else()
  find_program(PANGU_DPKG dpkg)
  mark_as_advanced(PANGU_DPKG)
  if(PANGU_DPKG)
    execute_process(COMMAND ${PANGU_DPKG} --print-architecture OUTPUT_VARIABLE _pangu_deb_arch
      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
endif()
set(PANGU_DEB_ARCHITECTURE "${_pangu_deb_arch}" CACHE STRING "Debian architecture of the .deb packages")
if(NOT PANGU_DEB_ARCHITECTURE)
  message(STATUS "packaging: no Debian architecture known for ${CMAKE_SYSTEM_PROCESSOR}; "
                 "set PANGU_DEB_ARCHITECTURE to make .deb packages")
  set(CPACK_GENERATOR TGZ)
endif()
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${PANGU_DEB_ARCHITECTURE})

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # <name>_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# -dev and tools depend on the runtime package of the same version.
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)
# A shlibs control file for the runtime package (libpangu_c <major> libpangu-c<major> (>= <version>)) and
# ldconfig in its postinst and postrm.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

# Debian descriptions: a synopsis (no full stop), then lines of the extended description (under 80 columns).
set(_pangu_desc "libpangu_c runs openPangu-Embedded language models on devices. It loads
checkpoints in the Hugging Face layout (config.json, bf16/f16/f32 or W8A16
safetensors, a SentencePiece tokenizer), memory-maps the weights and streams
generated text token by token through a C99 API, pangu/pangu.h.")
set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libpangu-c${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION "openPangu-Embedded language model runtime for C - shared library
${_pangu_desc}
.
This package holds the shared library.")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libpangu-c-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The static library and the CMake package's static target need the -dev packages of its dependencies.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libsentencepiece-dev, libjsoncpp-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION "openPangu-Embedded language model runtime for C - development files
${_pangu_desc}
.
This package holds the header, the static library, the pkg-config file
(pangu_c) and the CMake package (find_package(pangu_c)).")
set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME pangu-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "command-line tools for openPangu-Embedded language models
${_pangu_desc}
.
This package holds pangu-cli (completion and chat), pangu-perplexity
(perplexity on a text or JSONL file) and pangu-quantize (W8A16 conversion).")

# Dependencies on other packages. dpkg-shlibdeps finds them from the binaries' NEEDED entries and the installed
# packages' symbols files: only for the build machine's own architecture. Elsewhere (a cross build), Debian 12's
# package names with the versions that dpkg-shlibdeps computes for the native build (the arm64 binaries need
# the same symbol versions). CPack finds the binaries with `file`, also for the shlibs file and ldconfig.
find_program(PANGU_DPKG_SHLIBDEPS dpkg-shlibdeps)
find_program(PANGU_FILE file)
mark_as_advanced(PANGU_DPKG_SHLIBDEPS PANGU_FILE)
set(PANGU_DEB_EXPLICIT_DEPENDS
  "libc6 (>= 2.34), libgcc-s1 (>= 3.0), libjsoncpp25 (>= 1.9.5), libsentencepiece0 (>= 0.1.97), libstdc++6 (>= 12)"
  CACHE STRING "Depends of the runtime and tools .deb packages where dpkg-shlibdeps is not used (cross builds)")
mark_as_advanced(PANGU_DEB_EXPLICIT_DEPENDS)
if(NOT PANGU_FILE)
  message(STATUS "packaging: no `file` program (apt-get install file): the .deb packages get the explicit "
                 "dependencies, no shlibs file and no ldconfig call")
  set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS OFF)
endif()
if(NOT CMAKE_CROSSCOMPILING AND PANGU_DPKG_SHLIBDEPS AND PANGU_FILE)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.20)
    # pangu-cli needs libpangu_c.so.N, which is in the runtime package's staging directory beside this one
    # (dpkg-shlibdeps runs in <staging>/<component>); the dependency on it is the component dependency above.
    set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS "../runtime/usr/${CMAKE_INSTALL_LIBDIR}")
  else()
    set(CPACK_DEBIAN_TOOLS_PACKAGE_SHLIBDEPS OFF) # no SHLIBDEPS_PRIVATE_DIRS before CMake 3.20
    set(CPACK_DEBIAN_TOOLS_PACKAGE_DEPENDS "${PANGU_DEB_EXPLICIT_DEPENDS}")
  endif()
else()
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
  set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "${PANGU_DEB_EXPLICIT_DEPENDS}")
  set(CPACK_DEBIAN_TOOLS_PACKAGE_DEPENDS "${PANGU_DEB_EXPLICIT_DEPENDS}")
endif()

include(CPack)
