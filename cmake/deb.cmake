# What the .deb adds to the plain install (`make deb`, cpack -G DEB): the systemd
# unit and tmpfiles.d entry, the man pages, Debian's copyright and changelog, the
# maintainer scripts that create the zetian user and folders, and the CPack settings.
#
# The package is made from the Release build in build/, which the Makefile configures
# with CMAKE_INSTALL_PREFIX=/usr: GNUInstallDirs then gives the Debian layout
# (/usr/sbin, /usr/lib/<multiarch>, /etc, /usr/share/man) and cpack installs from that
# tree instead of compiling a second one.

# The systemd unit, from contrib/systemd (written for the package's paths) with the
# paths of this install and, without libsystemd (no sd_notify), Type=simple.
pkg_get_variable(ZETIAN_SYSTEMD_UNITDIR_DEFAULT systemd systemdsystemunitdir)
if(NOT ZETIAN_SYSTEMD_UNITDIR_DEFAULT)
  set(ZETIAN_SYSTEMD_UNITDIR_DEFAULT /lib/systemd/system)  # Debian 12's
endif()
set(ZETIAN_SYSTEMD_UNITDIR "${ZETIAN_SYSTEMD_UNITDIR_DEFAULT}" CACHE PATH "Where the systemd unit is installed")
file(READ ${CMAKE_SOURCE_DIR}/contrib/systemd/zetian-milter.service unit)
string(REPLACE "/usr/sbin/" "${CMAKE_INSTALL_FULL_SBINDIR}/" unit "${unit}")
string(REPLACE "/etc/zetian/" "${CMAKE_INSTALL_FULL_SYSCONFDIR}/zetian/" unit "${unit}")
string(REPLACE "/usr/share/doc/zetian-milter/" "${CMAKE_INSTALL_FULL_DOCDIR}/" unit "${unit}")
if(NOT ZETIAN_HAVE_SYSTEMD)
  string(REPLACE "Type=notify" "Type=simple" unit "${unit}")
endif()
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/contrib/zetian-milter.service CONTENT "${unit}" @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/contrib/zetian-milter.service DESTINATION ${ZETIAN_SYSTEMD_UNITDIR})
# /run is a tmpfs: the runtime folder is made again at boot (systemd-tmpfiles), for
# zetianctl and for a milter started outside systemd; the unit's RuntimeDirectory=
# makes it too.
install(FILES contrib/debian/zetian-milter.tmpfiles DESTINATION lib/tmpfiles.d
        RENAME zetian-milter.conf)

# Man pages, from scdoc sources in docs/man, gzipped as Debian installs them.
find_program(SCDOC_PROGRAM scdoc)
if(SCDOC_PROGRAM)
  set(man_pages "")
  foreach(page zetian-milter.8 zetianctl.8 zetian.toml.5)
    string(REGEX REPLACE ".*\\.([0-9])$" "\\1" section ${page})
    set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND sh -c "'${SCDOC_PROGRAM}' < '${CMAKE_SOURCE_DIR}/docs/man/${page}.scd' | gzip -9n > '${out}.tmp' && mv '${out}.tmp' '${out}'"
      DEPENDS ${CMAKE_SOURCE_DIR}/docs/man/${page}.scd
      COMMENT "scdoc ${page}"
      VERBATIM)
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
    list(APPEND man_pages ${out})
  endforeach()
  add_custom_target(man_pages ALL DEPENDS ${man_pages})
else()
  message(STATUS "scdoc not found: no man pages (the .deb needs them: apt-get install scdoc)")
endif()

# Debian's per-package documentation: copyright and changelog.Debian.gz.
configure_file(contrib/debian/changelog ${CMAKE_BINARY_DIR}/contrib/changelog.Debian @ONLY)
add_custom_command(OUTPUT ${CMAKE_BINARY_DIR}/contrib/changelog.Debian.gz
  COMMAND sh -c "gzip -9n < '${CMAKE_BINARY_DIR}/contrib/changelog.Debian' > '${CMAKE_BINARY_DIR}/contrib/changelog.Debian.gz'"
  DEPENDS ${CMAKE_BINARY_DIR}/contrib/changelog.Debian
  VERBATIM)
add_custom_target(debian_changelog ALL DEPENDS ${CMAKE_BINARY_DIR}/contrib/changelog.Debian.gz)
install(FILES contrib/debian/copyright ${CMAKE_BINARY_DIR}/contrib/changelog.Debian.gz README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME zetian-milter)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGE_CONTACT "Zetian developers <maintainers@users.noreply.r-seed-2605ed59.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Cluster-wide rate-limiting mail filter for Postfix and Sendmail")
# The extended description; CPack puts the summary above it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "zetian-milter limits how much mail a client, a sender or a network may send,
with limits shared by every node of a cluster. It talks to Postfix and Sendmail
through the milter protocol, and to Postfix also as a policy delegation server.
zetianctl shows and changes a running milter through its health socket.")
set(CPACK_DEBIAN_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libzetian ships in the package itself: dpkg-shlibdeps finds it here.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${CMAKE_BINARY_DIR}/plugin)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# adduser: postinst creates the zetian user.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
configure_file(contrib/debian/conffiles.in ${CMAKE_BINARY_DIR}/contrib/debian/conffiles @ONLY)
# libzetian is a shared library in a public folder: ldconfig runs after the unpack.
file(WRITE ${CMAKE_BINARY_DIR}/contrib/debian/triggers "activate-noawait ldconfig\n")
foreach(script postinst prerm postrm)
  configure_file(contrib/debian/${script} ${CMAKE_BINARY_DIR}/contrib/debian/${script} @ONLY)
endforeach()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_BINARY_DIR}/contrib/debian/conffiles
    ${CMAKE_BINARY_DIR}/contrib/debian/triggers
    ${CMAKE_BINARY_DIR}/contrib/debian/postinst
    ${CMAKE_BINARY_DIR}/contrib/debian/prerm
    ${CMAKE_BINARY_DIR}/contrib/debian/postrm)
include(CPack)
