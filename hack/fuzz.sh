#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func FuzzXxx(f *testing.F)`
# in a _test.go file) for DURATION each, one after the other:
#
#   hack/fuzz.sh [DURATION] [REGEXP]
#
# DURATION is a go test -fuzztime value (default 30s; "200x" counts
# executions instead). REGEXP, when given, keeps only the targets whose
# name matches it. New inputs are minimized for at most 5s, so a target
# takes about DURATION. A failing input is written under the package's
# testdata/fuzz/ by go test; commit it as a regression seed once fixed.
#
# Every target runs even when one fails; the exit status says whether all
# passed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
fuzztime="${1:-30s}"
filter="${2:-}"

# package directory and target name, one pair a line, sorted.
targets="$(
	grep -rEo --include='*_test.go' --exclude-dir=testdata --exclude-dir=bin --exclude-dir=.git \
		'^func Fuzz[A-Za-z0-9_]*\(' . |
		sed -E 's|^\./(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|; s|^\./[^/]*:func (Fuzz[A-Za-z0-9_]*)\($|. \1|' |
		sort -u
)"
if [[ -n "${filter}" ]]; then
	targets="$(awk -v re="${filter}" '$2 ~ re' <<<"${targets}")"
fi
if [[ -z "${targets}" ]]; then
	echo "fuzz: no fuzz targets${filter:+ matching ${filter}}" >&2
	exit 1
fi

count="$(wc -l <<<"${targets}")"
echo "fuzz: ${count} targets, ${fuzztime} each"
failed=()
while read -r dir name; do
	echo "fuzz: ${name} in ./${dir}"
	start=${SECONDS}
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "${fuzztime}" -fuzzminimizetime 5s "./${dir}"; then
		echo "fuzz: ${name} passed ($((SECONDS - start))s)"
	else
		echo "fuzz: ${name} FAILED ($((SECONDS - start))s)" >&2
		failed+=("./${dir} ${name}")
	fi
done <<<"${targets}"

if ((${#failed[@]} > 0)); then
	echo "fuzz: ${#failed[@]} of ${count} targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: all ${count} targets passed"
