# npu-sim (src/device/npusim): an Ascend 310P-class NPU emulated on the host. PANGU_WITH_NPUSIM=OFF leaves it out.
option(PANGU_WITH_NPUSIM "Build the emulated Ascend 310P backend (npu-sim)" ON)
if(NOT PANGU_WITH_NPUSIM)
  return()
endif()
set(_dir ${CMAKE_CURRENT_LIST_DIR})
list(APPEND PANGU_SOURCES ${_dir}/device_npusim.cpp ${_dir}/profile.cpp ${_dir}/memory.cpp ${_dir}/weights.cpp
     ${_dir}/ops.cpp)
list(APPEND PANGU_BACKENDS npusim)
