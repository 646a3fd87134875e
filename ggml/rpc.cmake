# ggml's RPC backend (ggml-rpc.h), for running one model across several hosts (docs/rpc.md).
#
# The libggml-python wheel ships ggml-rpc.h but not the backend, so it is compiled here from the ggml source of
# the SAME version as the ggml we link (never vendored; two .cpp files, ~15 s). Where that source comes from:
#
#   -DADADECODE_GGML_SOURCE_DIR=...   the ggml tree being built anyway (its src/ggml-rpc)
#   -DADADECODE_RPC_SOURCE=...        a ggml tree, or libggml-python's sdist (a .tar.gz, or its unpacked directory)
#   neither                           the pinned libggml-python 0.20.2.post1 sdist from PyPI (7.3 MB, SHA-256 checked)
#
# -DADADECODE_RPC=OFF leaves it out; so does a failed download (a warning says so, the build goes on). Without it
# `--rpc` and `adadecode rpc-server` stop with an error naming this option.

set(ADADECODE_RPC_SOURCE "" CACHE PATH "ggml source tree or libggml-python sdist with src/ggml-rpc (default: download)")
string(CONCAT ADADECODE_RPC_SDIST_URL
    "https://files.pythonhosted.org/packages/c7/d1/630570961ac1bc3471ccbb81e6376273d71a9063edc8b00b950a32a5daee/"
    "libggml_python-0.20.2.post1.tar.gz")
set(ADADECODE_RPC_SDIST_SHA256 "e47ff53506342959ffb3ce15380b82828fea10ec5f208f9ef6915895f1a7a176")
set(ADADECODE_HAVE_RPC OFF)

# The ggml tree inside `dir`: a ggml checkout itself, or libggml-python's sdist (ggml/ inside).
function(adadecode_rpc_tree dir out)
    if(EXISTS "${dir}/src/ggml-rpc/ggml-rpc.cpp")
        set(${out} "${dir}" PARENT_SCOPE)
    elseif(EXISTS "${dir}/ggml/src/ggml-rpc/ggml-rpc.cpp")
        set(${out} "${dir}/ggml" PARENT_SCOPE)
    else()
        set(${out} "" PARENT_SCOPE)
    endif()
endfunction()

if(ADADECODE_RPC AND ADADECODE_GGML_SOURCE_DIR)
    set(_rpc_tree "${ADADECODE_GGML_SOURCE_DIR}")  # the very tree being built: the same version by construction
elseif(ADADECODE_RPC)
    set(_rpc_tree "")
    set(_rpc_src "${ADADECODE_RPC_SOURCE}")
    if(NOT _rpc_src)
        set(_rpc_src "${CMAKE_BINARY_DIR}/rpc-src/libggml_python-0.20.2.post1.tar.gz")
        if(NOT EXISTS "${_rpc_src}")
            message(STATUS "adadecode: downloading the ggml source for the RPC backend (${ADADECODE_RPC_SDIST_URL})")
            file(DOWNLOAD "${ADADECODE_RPC_SDIST_URL}" "${_rpc_src}.part" TIMEOUT 120 STATUS _dl)
            list(GET _dl 0 _dl_rc)
            set(_sha "")
            if(_dl_rc EQUAL 0)
                file(SHA256 "${_rpc_src}.part" _sha)
            endif()
            if(_sha STREQUAL ADADECODE_RPC_SDIST_SHA256)
                file(RENAME "${_rpc_src}.part" "${_rpc_src}")
            else()
                message(STATUS "adadecode: download failed (${_dl}) or its SHA-256 differs (${_sha})")
                file(REMOVE "${_rpc_src}.part")
            endif()
        endif()
    endif()
    if(_rpc_src MATCHES "\\.tar\\.gz$" AND EXISTS "${_rpc_src}")
        set(_rpc_unpacked "${CMAKE_BINARY_DIR}/rpc-src/unpacked")
        if(NOT EXISTS "${_rpc_unpacked}/.done")
            file(REMOVE_RECURSE "${_rpc_unpacked}")
            file(ARCHIVE_EXTRACT INPUT "${_rpc_src}" DESTINATION "${_rpc_unpacked}"
                 PATTERNS "*/ggml/CMakeLists.txt" "*/ggml/include/*" "*/ggml/src/ggml-rpc/*" "*/ggml/src/*.h")
            file(TOUCH "${_rpc_unpacked}/.done")
        endif()
        file(GLOB _rpc_dirs "${_rpc_unpacked}/*")
        foreach(_d ${_rpc_dirs})
            adadecode_rpc_tree("${_d}" _rpc_found)
            if(_rpc_found)
                set(_rpc_tree "${_rpc_found}")
            endif()
        endforeach()
    elseif(IS_DIRECTORY "${_rpc_src}")
        adadecode_rpc_tree("${_rpc_src}" _rpc_tree)
    endif()
    if(NOT _rpc_tree)
        message(WARNING "adadecode: building WITHOUT the RPC backend: no ggml source (download failed or "
                        "ADADECODE_RPC_SOURCE=${ADADECODE_RPC_SOURCE} holds no src/ggml-rpc). Pass "
                        "-DADADECODE_RPC_SOURCE=<ggml tree or libggml_python-0.20.2.post1.tar.gz>, or "
                        "-DADADECODE_RPC=OFF to silence this.")
    endif()
endif()

if(_rpc_tree)
    # The backend implements ggml's internal interfaces (ggml-backend-impl.h), so its source must be the very
    # version of the library it plugs into: refuse another.
    file(STRINGS "${_rpc_tree}/CMakeLists.txt" _ver REGEX "set\\(GGML_VERSION_(MAJOR|MINOR|PATCH) [0-9]+\\)")
    string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+).*" "\\1.\\2.\\3" _ver "${_ver}")
    if(ggml_VERSION AND NOT _ver VERSION_EQUAL ggml_VERSION)
        message(FATAL_ERROR "ADADECODE_RPC: the ggml source in ${_rpc_tree} is version ${_ver}, the linked ggml is "
                            "${ggml_VERSION}; the RPC backend must come from the same version")
    endif()
    add_library(adadecode_ggml_rpc STATIC "${_rpc_tree}/src/ggml-rpc/ggml-rpc.cpp"
                                          "${_rpc_tree}/src/ggml-rpc/transport.cpp")
    target_include_directories(adadecode_ggml_rpc PUBLIC "${_rpc_tree}/include" "${_rpc_tree}/src")
    target_link_libraries(adadecode_ggml_rpc PRIVATE adadecode_ggml)
    # Hooks of ours (cpp/rpc.cpp) in place of a few calls in these two files only. ggml's client aborts the process
    # when a connection drops: ggml_abort throws an Error instead. And once a connection has failed, its socket
    # pretends to carry what the client sends and answers zeros, so that freeing the buffers of a dead server (a
    # command without reply) succeeds locally while any command that needs a reply fails at once with that Error.
    target_compile_definitions(adadecode_ggml_rpc PRIVATE ggml_abort=adadecode_rpc_abort)
    set_source_files_properties("${_rpc_tree}/src/ggml-rpc/transport.cpp" TARGET_DIRECTORY adadecode_ggml_rpc
                                PROPERTIES COMPILE_DEFINITIONS "send=adadecode_rpc_send;recv=adadecode_rpc_recv;close=adadecode_rpc_close"
                                COMPILE_OPTIONS "-U_FORTIFY_SOURCE")
    set(ADADECODE_HAVE_RPC ON)
endif()
message(STATUS "adadecode: RPC backend ${ADADECODE_HAVE_RPC}")
