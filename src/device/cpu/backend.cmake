# The CPU backend (src/device/cpu): always built. Kernels that need instruction-set extensions are compiled
# per file with their own flags and chosen at run time from the CPU's features, so one binary runs on every CPU
# of its architecture.
set(_dir ${CMAKE_CURRENT_LIST_DIR})
list(APPEND PANGU_SOURCES ${_dir}/device_cpu.cpp ${_dir}/kernels.cpp)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64|ARM64")
  list(APPEND PANGU_SOURCES ${_dir}/kernels_neon.cpp ${_dir}/kernels_neon_dotprod.cpp)
  set_source_files_properties(${_dir}/kernels_neon_dotprod.cpp PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
endif()
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  list(APPEND PANGU_SOURCES ${_dir}/kernels_avx2.cpp ${_dir}/kernels_avx2_int.cpp ${_dir}/kernels_avxvnni.cpp
                            ${_dir}/kernels_avx512.cpp ${_dir}/kernels_avx512bf16.cpp ${_dir}/kernels_avx512vnni.cpp)
  set_source_files_properties(${_dir}/kernels_avx2.cpp ${_dir}/kernels_avx2_int.cpp PROPERTIES COMPILE_OPTIONS
                              "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_dir}/kernels_avxvnni.cpp PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c;-mavxvnni")
  set_source_files_properties(${_dir}/kernels_avx512.cpp PROPERTIES COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl")
  set_source_files_properties(${_dir}/kernels_avx512bf16.cpp PROPERTIES COMPILE_OPTIONS
                              "-mavx512f;-mavx512bw;-mavx512vl;-mavx512bf16")
  # -mfma: its 256-bit loop for odd group sizes (kernels_avx2_int.h) fuses multiply-adds; every AVX-512 CPU has FMA
  set_source_files_properties(${_dir}/kernels_avx512vnni.cpp PROPERTIES COMPILE_OPTIONS
                              "-mavx512f;-mavx512bw;-mavx512vl;-mavx512vnni;-mfma")
endif()
list(APPEND PANGU_BACKENDS cpu)
