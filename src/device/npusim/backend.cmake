# npu-sim (src/device/npusim): an Ascend 310P-class NPU emulated on the host. PANGU_WITH_NPUSIM=OFF leaves it out.
set(_dir ${CMAKE_CURRENT_LIST_DIR})
list(APPEND PANGU_SOURCES ${_dir}/device_npusim.cpp)
list(APPEND PANGU_BACKENDS npusim)
