# Locates ONNX Runtime and defines the imported target onnxruntime::onnxruntime.
# Search order: -DORT_ROOT=..., $ENV{ORT_ROOT} (an official release: include/, lib/), then
# third_party/onnxruntime as scripts/setup fills it.
set(ORT_ROOT "$ENV{ORT_ROOT}" CACHE PATH "ONNX Runtime root (include/, lib/)")
if(NOT ORT_ROOT)
  set(ORT_ROOT "${CMAKE_CURRENT_SOURCE_DIR}/third_party/onnxruntime")
endif()

find_path(ORT_INCLUDE_DIR onnxruntime_cxx_api.h
  PATHS "${ORT_ROOT}/include" "${ORT_ROOT}/include/onnxruntime"
  NO_DEFAULT_PATH)
find_library(ORT_LIBRARY NAMES onnxruntime libonnxruntime.so.1
  PATHS "${ORT_ROOT}/lib" NO_DEFAULT_PATH)
if(NOT ORT_INCLUDE_DIR OR NOT ORT_LIBRARY)
  message(FATAL_ERROR "ONNX Runtime not found under '${ORT_ROOT}': run scripts/setup, or set ORT_ROOT "
                      "to an ONNX Runtime release (include/, lib/).")
endif()
message(STATUS "ONNX Runtime: ${ORT_LIBRARY} (headers ${ORT_INCLUDE_DIR})")

add_library(onnxruntime::onnxruntime SHARED IMPORTED)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION "${ORT_LIBRARY}"
  IMPORTED_NO_SONAME FALSE
  INTERFACE_INCLUDE_DIRECTORIES "${ORT_INCLUDE_DIR}")
# Installed/built binaries find the library next to the build tree.
get_filename_component(ORT_LIBRARY_DIR "${ORT_LIBRARY}" DIRECTORY)
set(CMAKE_BUILD_RPATH "${CMAKE_BUILD_RPATH};${ORT_LIBRARY_DIR}")
