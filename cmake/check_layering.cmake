# The layering rules of DESIGN.md, checked on every build (`cmake -P`, run by the
# `check_layering` target that everything depends on). A violation fails the build
# with the file, the line and the rule it breaks.
#
#   state/, conf/  pure: no I/O library or socket header, nothing from the folders above
#   cluster/       nothing from plugin/ or milter/
#   plugin/        nothing from milter/, and no event loop, Redis, milter or DNS library:
#                  only cluster/ runs I/O (the engine reaches it through cluster::Loop)
#   milter/        only plugin/zetian.h (the C ABI) and its own files; zetianctl, the
#                  operator CLI and no host, also the pure conf/ (it checks policy files)
#
# Per-target include folders (CMakeLists.txt) make most of these unbuildable anyway;
# this script states them and catches what a shared include folder would let through
# (a header of a library the target links for another reason).
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "usage: cmake -DSOURCE_DIR=<tree> -P check_layering.cmake")
endif()

set(io_headers "event2/" "openssl/" "hiredis/" "libmilter/" "ares.h" "ares_" "curl/"
    "sys/socket.h" "sys/un.h" "sys/epoll.h" "sys/select.h" "poll.h" "netdb.h"
    "netinet/" "ifaddrs.h" "net/if.h")

set(violations "")

# check(FOLDER FORBIDDEN_PATTERNS... ) with patterns matched against the include's target.
function(check_folder folder rule)
  file(GLOB_RECURSE sources "${SOURCE_DIR}/${folder}/*.cpp" "${SOURCE_DIR}/${folder}/*.h"
       "${SOURCE_DIR}/${folder}/*.c")
  foreach(src IN LISTS sources)
    file(STRINGS "${src}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]*)[>\"].*$" "\\1" target "${line}")
      set(bad "")
      if(rule STREQUAL "pure")
        foreach(h IN LISTS io_headers)
          string(FIND "${target}" "${h}" at)
          if(at EQUAL 0)
            set(bad "an I/O header in a pure folder")
          endif()
        endforeach()
        if(target MATCHES "^(cluster|plugin|milter)/")
          set(bad "a pure folder includes a module above it")
        endif()
        if(folder STREQUAL "state" AND target MATCHES "^conf/")
          set(bad "state/ includes conf/ (conf builds on state, not the other way)")
        endif()
      elseif(rule STREQUAL "cluster")
        if(target MATCHES "^(plugin|milter)/")
          set(bad "cluster/ includes plugin/ or milter/")
        endif()
      elseif(rule STREQUAL "plugin")
        if(target MATCHES "^milter/")
          set(bad "plugin/ includes milter/")
        elseif(target MATCHES "^(event2/|hiredis/|libmilter/|ares|curl/)")
          set(bad "plugin/ includes an I/O library (only cluster/ does I/O)")
        endif()
      elseif(rule STREQUAL "milter")
        get_filename_component(source_name "${src}" NAME)
        if(target MATCHES "^conf/" AND source_name MATCHES "^(zetianctl|ctl_policy)\\.")
          # zetianctl's policy commands check and compare policy files with the daemon's own loader.
        elseif(target MATCHES "^(state|conf|cluster|plugin|tests)/" AND NOT target STREQUAL "plugin/zetian.h")
          set(bad "milter/ may include only plugin/zetian.h and its own files")
        endif()
      endif()
      if(bad)
        file(RELATIVE_PATH rel "${SOURCE_DIR}" "${src}")
        set(violations "${violations}\n  ${rel}: #include ${target}: ${bad}" PARENT_SCOPE)
        set(violations "${violations}\n  ${rel}: #include ${target}: ${bad}")
      endif()
    endforeach()
  endforeach()
endfunction()

check_folder(state pure)
check_folder(conf pure)
check_folder(cluster cluster)
check_folder(plugin plugin)
check_folder(milter milter)

if(violations)
  message(FATAL_ERROR "layering rules broken (see cmake/check_layering.cmake):${violations}")
endif()
