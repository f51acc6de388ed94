// The incarnation file in node.state_dir: the number only grows, whatever the clock
// does; a damaged file is survived with a warning; a folder that cannot hold it stops
// the start with an error that says what to do.
#include "cluster/incarnation.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "test_support.h"

namespace zetian::cluster {
namespace {

using testing::TempDir;

constexpr std::uint64_t kNow = 1'790'000'000'000;  // a wall clock in Unix ms (2026)

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void writeFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

void setModificationTime(const std::string& path, std::int64_t unix_seconds) {
  const timespec times[2] = {{unix_seconds, 0}, {unix_seconds, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
}

TEST(Incarnation, AFreshFolderTakesTheWallClockAndKeepsIt) {
  TempDir dir;
  const auto out = advanceIncarnation(dir.path(), kNow);
  EXPECT_EQ(out.error, "");
  EXPECT_EQ(out.warning, "");
  EXPECT_EQ(out.value, kNow);
  EXPECT_EQ(readFile(dir.file(kIncarnationFileName)), std::to_string(kNow) + "\n");
  EXPECT_FALSE(std::filesystem::exists(dir.file(std::string(kIncarnationFileName) + ".tmp")));
}

TEST(Incarnation, GrowsEvenWhenTheClockGoesBack) {
  TempDir dir;
  EXPECT_EQ(advanceIncarnation(dir.path(), kNow).value, kNow);
  const std::uint64_t hour_ago = kNow - 3'600'000;
  EXPECT_EQ(advanceIncarnation(dir.path(), hour_ago).value, kNow + 1);
  EXPECT_EQ(advanceIncarnation(dir.path(), hour_ago).value, kNow + 2);
  EXPECT_EQ(advanceIncarnation(dir.path(), kNow + 2).value, kNow + 3);  // same ms as the last: still more
  // The clock ahead again: back to the wall clock.
  EXPECT_EQ(advanceIncarnation(dir.path(), kNow + 60'000).value, kNow + 60'000);
  EXPECT_EQ(readFile(dir.file(kIncarnationFileName)), std::to_string(kNow + 60'000) + "\n");
}

TEST(Incarnation, AClockBefore1970StillGivesAPositiveIncarnation) {
  TempDir dir;
  EXPECT_EQ(advanceIncarnation(dir.path(), 0).value, 1u);
  EXPECT_EQ(advanceIncarnation(dir.path(), 0).value, 2u);
}

TEST(Incarnation, AGarbageFileWarnsAndFallsBackToTheLaterOfClockAndFileTime) {
  TempDir dir;
  const std::string path = dir.file(kIncarnationFileName);
  writeFile(path, "not a number\n");
  // Written (as far as its time says) two hours after our clock: the file wins.
  const std::int64_t file_seconds = static_cast<std::int64_t>(kNow / 1000) + 7200;
  setModificationTime(path, file_seconds);
  const auto out = advanceIncarnation(dir.path(), kNow);
  EXPECT_EQ(out.error, "");
  EXPECT_EQ(out.value, static_cast<std::uint64_t>(file_seconds) * 1000 + 1);
  EXPECT_NE(out.warning.find("cluster_incarnation_file_unreadable"), std::string::npos) << out.warning;
  EXPECT_NE(out.warning.find(path), std::string::npos) << out.warning;
  EXPECT_NE(out.warning.find("fallback=" + std::to_string(out.value)), std::string::npos) << out.warning;
  // Rewritten in good form: the next start reads it without a warning.
  EXPECT_EQ(readFile(path), std::to_string(out.value) + "\n");
  const auto next = advanceIncarnation(dir.path(), kNow);
  EXPECT_EQ(next.warning, "");
  EXPECT_EQ(next.value, out.value + 1);
}

TEST(Incarnation, AFileOlderThanTheClockFallsBackToTheClock) {
  TempDir dir;
  const std::string path = dir.file(kIncarnationFileName);
  writeFile(path, "");
  setModificationTime(path, 1'000'000'000);  // 2001
  const auto out = advanceIncarnation(dir.path(), kNow);
  EXPECT_NE(out.warning, "");
  EXPECT_EQ(out.value, kNow);
}

TEST(Incarnation, TornOrEditedFilesAreNotTrusted) {
  // Each would be a smaller (or a made-up) number if it were read leniently.
  for (const std::string& content :
       {std::string(""), std::string("17"), std::to_string(kNow).substr(0, 5), std::string("\n"),
        std::string(" 12\n"), std::string("12 \n"), std::string("-5\n"), std::string("0\n"),
        std::string("0x10\n"), std::string("12\n13\n"), std::string("99999999999999999999999\n"),
        std::string(100, '9') + "\n", std::string("12\0\n", 4)}) {
    TempDir dir;
    const std::string path = dir.file(kIncarnationFileName);
    writeFile(path, content);
    setModificationTime(path, 1'000'000'000);
    const auto out = advanceIncarnation(dir.path(), kNow);
    EXPECT_EQ(out.error, "") << content;
    EXPECT_NE(out.warning, "") << content;
    EXPECT_EQ(out.value, kNow) << content;
    EXPECT_EQ(readFile(path), std::to_string(kNow) + "\n");
  }
}

TEST(Incarnation, AFolderThatDoesNotExistIsAClearErrorAndNothingIsCreated) {
  TempDir dir;
  const std::string missing = dir.file("no-such-folder");
  const auto out = advanceIncarnation(missing, kNow);
  EXPECT_EQ(out.value, 0u);
  EXPECT_NE(out.error.find("node.state_dir " + missing), std::string::npos) << out.error;
  EXPECT_NE(out.error.find("No such file or directory"), std::string::npos) << out.error;
  EXPECT_NE(out.error.find("writable by the user zetian-milter runs as"), std::string::npos) << out.error;
  EXPECT_FALSE(std::filesystem::exists(missing));
}

TEST(Incarnation, AFileInsteadOfAFolderIsAClearError) {
  TempDir dir;
  const std::string file = dir.file("state");
  writeFile(file, "x");
  const auto out = advanceIncarnation(file, kNow);
  EXPECT_EQ(out.value, 0u);
  EXPECT_NE(out.error.find("Not a directory"), std::string::npos) << out.error;
}

// advanceIncarnation() in a child process running as `nobody` (when the test runs as
// root, for which folder permissions do not apply), as zetian-milter after it dropped
// its privileges; returns the error text, or "child failed".
std::string errorAsUnprivilegedUser(const std::string& dir, std::uint64_t now) {
  int fds[2];
  if (pipe(fds) != 0) return "child failed";
  const pid_t pid = fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(2);
    const auto out = advanceIncarnation(dir, now);
    const std::string text = out.value == 0 ? out.error : "stored " + std::to_string(out.value);
    const bool written = ::write(fds[1], text.data(), text.size()) == static_cast<ssize_t>(text.size());
    _exit(written ? 0 : 3);
  }
  ::close(fds[1]);
  std::string text;
  char buffer[512];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return "child failed";
  }
  return text;
}

TEST(Incarnation, AnUnwritableFolderIsAClearErrorAndTheOldValueStays) {
  TempDir dir;
  ASSERT_EQ(advanceIncarnation(dir.path(), kNow).value, kNow);
  const std::string path = dir.file(kIncarnationFileName);
  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  ASSERT_EQ(chmod(dir.path().c_str(), 0555), 0);
  const std::string error = errorAsUnprivilegedUser(dir.path(), kNow + 5);
  EXPECT_NE(error.find("node.state_dir " + dir.path() + ": cannot create"), std::string::npos) << error;
  EXPECT_NE(error.find("Permission denied"), std::string::npos) << error;
  EXPECT_NE(error.find("writable by the user zetian-milter runs as"), std::string::npos) << error;
  EXPECT_EQ(readFile(path), std::to_string(kNow) + "\n");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Incarnation, AnIncarnationThatCannotGrowIsAnError) {
  TempDir dir;
  writeFile(dir.file(kIncarnationFileName), std::to_string(UINT64_MAX) + "\n");
  const auto out = advanceIncarnation(dir.path(), kNow);
  EXPECT_EQ(out.value, 0u);
  EXPECT_NE(out.error.find("cannot grow"), std::string::npos) << out.error;
}

TEST(Incarnation, TheTestClockOffsetIsAWholeNumberOfMilliseconds) {
  std::string error;
  EXPECT_FALSE(testClockOffsetMs(nullptr, &error));
  EXPECT_EQ(error, "");
  EXPECT_EQ(testClockOffsetMs("-3600000", &error), -3'600'000);
  EXPECT_EQ(testClockOffsetMs("250", &error), 250);
  EXPECT_EQ(error, "");
  for (const char* bad : {"", "1h", "-", "12x", " 5", "99999999999999999999"}) {
    error.clear();
    EXPECT_FALSE(testClockOffsetMs(bad, &error)) << bad;
    EXPECT_NE(error.find("ZETIAN_TEST_CLOCK_OFFSET_MS"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace zetian::cluster
