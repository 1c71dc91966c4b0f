#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func FuzzXxx(f *testing.F)`
# in a _test.go file) for BUDGET each, one after the other:
#
#   hack/fuzz.sh [BUDGET] [REGEXP]
#
# BUDGET is a go test -fuzztime value (default 20000x: an execution count).
# REGEXP, when given, keeps only the targets whose name matches it. New
# inputs are minimized for at most 5s. A failing input is written under the
# package's testdata/fuzz/ by go test; commit it as a regression seed once
# fixed.
#
# A target fails only when go test wrote a reproducer. Go 1.26's fuzz
# coordinator can end a run with a bare "context deadline exceeded" and no
# input (golang/go#75804, fixed in Go 1.27), most often with a duration
# budget on a loaded machine; that is reported, not counted as a finding.
#
# Every target runs even when one fails; the exit status says whether all
# passed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${root}"
fuzztime="${1:-20000x}"
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
	corpus="./${dir}/testdata/fuzz/${name}"
	before="$(ls "${corpus}" 2>/dev/null | sort || true)"
	log="$(mktemp)"
	if go test -run '^$' -fuzz "^${name}\$" -fuzztime "${fuzztime}" -fuzzminimizetime 5s "./${dir}" 2>&1 | tee "${log}"; then
		echo "fuzz: ${name} passed ($((SECONDS - start))s)"
	elif [[ "$(ls "${corpus}" 2>/dev/null | sort || true)" == "${before}" ]] &&
		grep -q 'context deadline exceeded' "${log}" && ! grep -q -e '--- FAIL' -e 'panic:' "${log}"; then
		echo "fuzz: ${name} ended with a bare deadline error and no reproducer ($((SECONDS - start))s): not a finding (golang/go#75804)" >&2
	else
		echo "fuzz: ${name} FAILED ($((SECONDS - start))s); a reproducer, if any, is under ${corpus}" >&2
		failed+=("./${dir} ${name}")
	fi
	rm -f "${log}"
done <<<"${targets}"

if ((${#failed[@]} > 0)); then
	echo "fuzz: ${#failed[@]} of ${count} targets failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: all ${count} targets passed"
