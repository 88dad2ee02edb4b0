#!/bin/sh
# Checks the Swift style with swift-format (ships with the Swift 6.3 toolchain as
# `swift format`; works offline) against the checked-in .swift-format: 4-space indentation,
# lines up to 180 columns, and every rule the whole tree already passes.
#
# The pretty-printer part (indentation, line breaks) applies to the folders below, which are
# formatted; the rest of the tree is formatted folder by folder (run
# `swift format format -i -r DIR`, check the diff, add DIR here) so that no large reformat
# lands on code others are changing. Exit status 1 on any finding.
#
#     scripts/lint.sh
set -eu
cd "$(dirname "$0")/.."
formatted="Sources/OpacityCLI Sources/opacity Sources/opacity-bench Sources/OpacityTensor/Kernels Examples/ReadmeSnippet
  Examples/TinyBackbone/Sources/tiny-opacity Tests/OpacityCLITests/CLIConsistencyTests.swift
  Tests/OpacityCLITests/HelpSnapshotTests.swift Tests/OpacityCLITests/InstallTests.swift
  Tests/OpacityCLITests/ReadmeSnippetTests.swift Tests/OpacityPersistenceTests/ZooLocationTests.swift"
# shellcheck disable=SC2086
swift format lint --strict --configuration .swift-format -r $formatted
# The rules (not the layout) on everything: findings other than the pretty-printer's fail.
out=$(swift format lint --configuration .swift-format -r Sources Plugins Tests Examples/ReadmeSnippet Examples/TinyBackbone/Sources 2>&1 \
  | grep -vE '\[(AddLines|RemoveLine|Indentation|TrailingComma|Spacing|LineLength|EndOfLineComment)\]' || true)
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "error: swift-format rule findings (above)" >&2
  exit 1
fi
# Shell scripts parse with the shell their first line names (a bash array in a /bin/sh script
# failed only at run time, in CI's example check).
for f in scripts/*.sh .ci/run Examples/*/*.sh; do
  [ -f "$f" ] || continue
  case "$(head -n 1 "$f")" in
    *bash*) bash -n "$f" || { echo "error: $f does not parse as bash" >&2; exit 1; } ;;
    '#!/bin/sh'*) sh -n "$f" || { echo "error: $f does not parse as POSIX sh (its first line says /bin/sh)" >&2; exit 1; } ;;
  esac
done
echo "lint: ok"
