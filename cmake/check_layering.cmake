# Fails when a file of one area includes a header of an area it may not use.
#   cmake -DAREA=quant -DALLOWED=common,io,model -DROOT=<source dir> -DSTAMP=<file> -P check_layering.cmake
# Run by the build before each area library compiles (see CMakeLists.txt), so a wrong include fails the
# build with the file, the line and the rule it breaks.
cmake_policy(SET CMP0057 NEW)  # IN_LIST
string(REPLACE "," ";" ALLOWED "${ALLOWED}")
file(GLOB files "${ROOT}/include/qkd/${AREA}/*.h" "${ROOT}/src/${AREA}/*.cpp" "${ROOT}/src/${AREA}/*.h")
set(problems "")
foreach(file ${files})
  file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"qkd/[a-z_]+/")
  foreach(line ${lines})
    string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"qkd/([a-z_]+)/.*" "\\1" used "${line}")
    if(NOT used STREQUAL AREA AND NOT used IN_LIST ALLOWED)
      string(REPLACE "${ROOT}/" "" relative "${file}")
      string(APPEND problems "\n  ${relative}: ${line}  (${AREA} may use: ${ALLOWED})")
    endif()
  endforeach()
endforeach()
if(problems)
  message(FATAL_ERROR "layering: area '${AREA}' includes areas it may not use (docs/architecture.md):${problems}")
endif()
file(WRITE "${STAMP}" "ok\n")
