// [metrics.statsd]: its defaults, what each key accepts, and each refusal with the key
// it names and its place.
#include <gtest/gtest.h>

#include <string>

#include "conf/load.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

TEST(StatsdConfig, AbsentTableMeansNoPush) {
  EXPECT_FALSE(good("[node]\nid = \"a\"\n").metrics.statsd.has_value());
  // [metrics] alone holds no exporter either.
  EXPECT_FALSE(good("[metrics]\n").metrics.statsd.has_value());
}

TEST(StatsdConfig, TheTableAloneTurnsItOnWithTheDefaults) {
  const auto statsd = good("[metrics.statsd]\n").metrics.statsd;
  ASSERT_TRUE(statsd.has_value());
  EXPECT_EQ(statsd->address, (HostPort{"127.0.0.1", 8125}));
  EXPECT_EQ(statsd->prefix, "zetian");
  EXPECT_EQ(statsd->interval, 10s);
  EXPECT_EQ(statsd->tags, StatsdTags::Dogstatsd);
}

TEST(StatsdConfig, EveryKeyIsRead) {
  const auto statsd = good("[metrics.statsd]\naddress = \"[::1]:9125\"\nprefix = \"mail.mx-1\"\n"
                           "interval = \"1m\"\ntags = \"none\"\n")
                          .metrics.statsd;
  ASSERT_TRUE(statsd.has_value());
  EXPECT_EQ(statsd->address, (HostPort{"::1", 9125}));
  EXPECT_EQ(statsd->prefix, "mail.mx-1");
  EXPECT_EQ(statsd->interval, 1min);
  EXPECT_EQ(statsd->tags, StatsdTags::None);
  EXPECT_EQ(good("[metrics.statsd]\nprefix = \"\"\n").metrics.statsd->prefix, "");
}

TEST(StatsdConfig, AHostNameIsRefusedBecauseTheClusterThreadNeverWaitsForDns) {
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\naddress = \"statsd.example.net:8125\"\n"), 2, 11,
                  "`metrics.statsd.address` \"statsd.example.net:8125\" must be an IP address and port");
}

TEST(StatsdConfig, AnAddressWithoutAPortOrWithABadOneIsRefused) {
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\naddress = \"127.0.0.1\"\n"), 2, 11, "`metrics.statsd.address`");
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\naddress = \"127.0.0.1:70000\"\n"), 2, 11,
                  "`metrics.statsd.address`");
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\naddress = \"\"\n"), 2, 11, "`metrics.statsd.address`");
}

TEST(StatsdConfig, APrefixCannotHoldTheLinesSeparators) {
  for (const char* bad : {"a:b", "a|b", "a b", "a#b", ".a", "a.", "a..b", "a@b"}) {
    EXPECT_ERROR_AT(onlyError(std::string("[metrics.statsd]\nprefix = \"") + bad + "\"\n"), 2, 10,
                    "`metrics.statsd.prefix`");
  }
}

TEST(StatsdConfig, TheIntervalIsBounded) {
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\ninterval = \"500ms\"\n"), 2, 12,
                  "`metrics.statsd.interval` must be from 1s to 10m, not 500ms");
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\ninterval = \"1h\"\n"), 2, 12, "`metrics.statsd.interval`");
  EXPECT_EQ(good("[metrics.statsd]\ninterval = \"1s\"\n").metrics.statsd->interval, 1s);
}

TEST(StatsdConfig, TagsIsOneOfTwoNames) {
  EXPECT_ERROR_AT(onlyError("[metrics.statsd]\ntags = \"influx\"\n"), 2, 8, "dogstatsd");
}

TEST(StatsdConfig, UnknownKeysAreRefused) {
  EXPECT_NE(onlyError("[metrics.statsd]\nadress = \"127.0.0.1:8125\"\n").message.find("address"), std::string::npos);
}

}  // namespace
}  // namespace zetian::conf
