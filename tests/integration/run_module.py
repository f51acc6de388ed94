"""Run one integration test module the way CTest registers it.

    python3 run_module.py MODULE

Like `python3 -m unittest -v MODULE`, with one rule more: under CI=true a skipped test
method is a failure. CI machines have root, Postfix, network namespaces and dnsmasq,
so a skip there means a test that should have run did not; elsewhere a skip stays a
skip, with its reason printed.
"""
import os
import sys
import unittest


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[1])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        return 1
    if os.environ.get("CI") == "true" and result.skipped:
        print("\nFAILED under CI=true: skipped tests count as failures here:", file=sys.stderr)
        for test, reason in result.skipped:
            print(f"  {test.id()}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
