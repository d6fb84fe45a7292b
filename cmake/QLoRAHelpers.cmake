# Small helpers shared by every CMakeLists.txt of the project.

# Compiler-side targets link libMLIR.so and follow LLVM's build flags:
# no exceptions (LLVM 22 on Debian is built with LLVM_ENABLE_EH=OFF), RTTI on.
function(qlora_compiler_target target)
  target_compile_options(${target} PRIVATE -fno-exceptions)
  target_include_directories(${target} SYSTEM PUBLIC
    ${LLVM_INCLUDE_DIRS} ${MLIR_INCLUDE_DIRS})
  target_include_directories(${target} PUBLIC
    ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  separate_arguments(llvmDefinitions NATIVE_COMMAND "${LLVM_DEFINITIONS}")
  target_compile_options(${target} PUBLIC ${llvmDefinitions})
endfunction()

# Registers a GoogleTest binary with ctest; `LABELS gpu` marks tests that need
# a CUDA device and skip cleanly without one.
function(qlora_add_gtest name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    QLORA_ORACLE_DIR="${QLORA_ORACLE_DIR}"
    QLORA_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  if(ARG_LABELS)
    gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}" DISCOVERY_TIMEOUT 60)
  else()
    gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60)
  endif()
endfunction()
