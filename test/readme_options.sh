#!/usr/bin/env bash
# README's table of subscription options lists exactly the options of src/options.hpp, with the
# same defaults, in any order. Usage: test/readme_options.sh [repository root]
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
code=$(grep -o '{"[a-z_]*", \(true\|false\), &Options::[a-z_]*}' "$root/src/options.hpp" |
	sed 's/{"\([a-z_]*\)", \([a-z]*\),.*/\1 \2/' | sort)
readme=$(sed -n '/^`options` (jsonb object/,/^$/p; /^| key | default | meaning |$/,/^$/p' "$root/README.md" |
	grep -o '^| `[a-z_]*` | `\(true\|false\)` |' | sed 's/^| `\([a-z_]*\)` | `\([a-z]*\)` |/\1 \2/' | sort -u)
if [ -z "$code" ] || [ "$code" != "$readme" ]; then
	echo "README's options table and src/options.hpp differ:"
	diff <(echo "$code") <(echo "$readme") || true
	exit 1
fi
echo "README lists the $(echo "$code" | wc -l) options of src/options.hpp with their defaults"
