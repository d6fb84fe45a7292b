# Configures the lit suite into the build tree and registers every .mlir test
# file as its own ctest test, named lit/<path>, e.g. lit/Dialect/ops.mlir.

set(QLORA_LIT_EXECUTABLE "${LLVM_TOOLS_BINARY_DIR}/lit" CACHE FILEPATH
    "lit driver used by the lit ctest tests")
if(NOT EXISTS "${QLORA_LIT_EXECUTABLE}")
  find_program(QLORA_LIT_EXECUTABLE_FOUND NAMES lit llvm-lit REQUIRED)
  set(QLORA_LIT_EXECUTABLE "${QLORA_LIT_EXECUTABLE_FOUND}")
endif()

set(QLORA_LIT_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
set(QLORA_LIT_BINARY_DIR "${CMAKE_CURRENT_BINARY_DIR}")
set(QLORA_LIT_TOOLS_DIR "${CMAKE_RUNTIME_OUTPUT_DIRECTORY}")
set(QLORA_LIT_LLVM_TOOLS_DIR "${LLVM_TOOLS_BINARY_DIR}")
configure_file(${CMAKE_CURRENT_SOURCE_DIR}/lit.site.cfg.py.in
               ${CMAKE_CURRENT_BINARY_DIR}/lit.site.cfg.py @ONLY)

# Tools the tests run; `check-qlora-lit` builds them, then runs the suite.
set(QLORA_LIT_DEPENDS qlora-opt)
add_custom_target(check-qlora-lit
  COMMAND ${QLORA_LIT_EXECUTABLE} -sv ${CMAKE_CURRENT_BINARY_DIR}
  DEPENDS ${QLORA_LIT_DEPENDS}
  USES_TERMINAL
  COMMENT "Running the qlora lit suite")

# One ctest test per file, so ctest's summary counts lit files. The glob is
# re-evaluated at build time, so new test files are picked up on rebuild.
# Files under Inputs/ directories are data, not tests (lit's convention).
file(GLOB_RECURSE QLORA_LIT_TESTS CONFIGURE_DEPENDS
     RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR}/*.mlir)
list(FILTER QLORA_LIT_TESTS EXCLUDE REGEX "(^|/)Inputs/")
# Parallel ctest runs several lit processes at once: none records test
# times, since they would race on one .lit_test_times.txt and a torn file
# fails every later run's discovery.
foreach(test_file IN LISTS QLORA_LIT_TESTS)
  add_test(NAME lit/${test_file}
           COMMAND ${QLORA_LIT_EXECUTABLE} -sv --skip-test-time-recording
                   ${CMAKE_CURRENT_BINARY_DIR}/${test_file})
  # Reported as "not run" instead of a confusing failure before a build.
  set_tests_properties(lit/${test_file} PROPERTIES
    LABELS lit
    REQUIRED_FILES $<TARGET_FILE:qlora-opt>)
endforeach()
