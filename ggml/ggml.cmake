# How adadecode obtains ggml. Never vendored: either the prebuilt CPU library of the
# libggml-python wheel (default), or an external ggml source tree (native / CUDA builds).
#
#   -DADADECODE_GGML_SOURCE_DIR=/path/to/ggml   build ggml from that tree (its own GGML_* options apply,
#                                              e.g. -DGGML_CUDA=ON, -DGGML_NATIVE=OFF -DGGML_AVX512=ON)
#   -DADADECODE_GGML_PREFIX=/path/to/libggml    use an installed prefix (lib64/cmake/ggml inside)
#   neither                                    ask the Python interpreter where libggml-python lives

set(ADADECODE_GGML_SOURCE_DIR "" CACHE PATH "ggml source tree to build instead of the prebuilt wheel")
set(ADADECODE_GGML_PREFIX "" CACHE PATH "prefix of a prebuilt ggml (the libggml package directory)")
option(ADADECODE_RPC "compile ggml's RPC backend (adadecode rpc-server, --rpc; see ggml/rpc.cmake)" ON)

if(ADADECODE_GGML_SOURCE_DIR)
    if(NOT EXISTS "${ADADECODE_GGML_SOURCE_DIR}/CMakeLists.txt")
        message(FATAL_ERROR "ADADECODE_GGML_SOURCE_DIR=${ADADECODE_GGML_SOURCE_DIR} holds no CMakeLists.txt")
    endif()
    # AMX kernels die with SIGILL on these VMs even though the CPU advertises AMX.
    set(GGML_AMX_INT8 OFF CACHE BOOL "" FORCE)
    set(GGML_AMX_TILE OFF CACHE BOOL "" FORCE)
    set(GGML_AMX_BF16 OFF CACHE BOOL "" FORCE)
    # ggml's own thread pool, as in the prebuilt wheel: OpenMP workers spin-wait and collapse when cores are shared.
    set(GGML_OPENMP OFF CACHE BOOL "" FORCE)
    # CUDA graphs are on in llama.cpp's builds but off by default in ggml's own: each pass shape keeps its graph
    # stable (cpp/forward.cpp), so ggml's CUDA backend can replay it instead of launching every kernel.
    set(GGML_CUDA_GRAPHS_DEFAULT ON)
    set(GGML_BUILD_TESTS OFF CACHE BOOL "" FORCE)
    set(GGML_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
    add_subdirectory("${ADADECODE_GGML_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/ggml-build" EXCLUDE_FROM_ALL)
    add_library(adadecode_ggml INTERFACE)
    target_link_libraries(adadecode_ggml INTERFACE ggml ggml-base ggml-cpu)
    set(ADADECODE_GGML_LIBDIR "")
else()
    if(NOT ADADECODE_GGML_PREFIX)
        find_package(Python3 COMPONENTS Interpreter REQUIRED)
        execute_process(
            COMMAND "${Python3_EXECUTABLE}" -c "import libggml, os; print(os.path.dirname(libggml.__file__))"
            OUTPUT_VARIABLE ADADECODE_GGML_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
            RESULT_VARIABLE _libggml_rc ERROR_QUIET)
        if(NOT _libggml_rc EQUAL 0 OR NOT ADADECODE_GGML_PREFIX)
            message(FATAL_ERROR
                "ggml not found: `pip install libggml-python==0.20.2.post1` into ${Python3_EXECUTABLE}, "
                "or pass -DADADECODE_GGML_PREFIX=... or -DADADECODE_GGML_SOURCE_DIR=...")
        endif()
    endif()
    find_package(ggml 0.20.2 REQUIRED PATHS "${ADADECODE_GGML_PREFIX}/lib64/cmake/ggml" NO_DEFAULT_PATH)
    add_library(adadecode_ggml INTERFACE)
    target_link_libraries(adadecode_ggml INTERFACE ggml::ggml ggml::ggml-base ggml::ggml-cpu)
    set(ADADECODE_GGML_LIBDIR "${ADADECODE_GGML_PREFIX}/lib64")
endif()
message(STATUS "adadecode: ggml from ${ADADECODE_GGML_SOURCE_DIR}${ADADECODE_GGML_PREFIX}")
