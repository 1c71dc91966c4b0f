#!/usr/bin/env bash
# Prints the directory to use as KUBEBUILDER_ASSETS for envtest: one holding
# kube-apiserver and etcd of the Kubernetes version the project targets.
#
# The binaries live under bin/k8s/<version>-<os>-<arch>, the layout
# setup-envtest uses. When they are missing, setup-envtest is tried first (if
# installed); failing that, they are built from source through the Go module
# proxy with the small modules in hack/envtest. The result is cached, so only
# the first run is slow.
#
# The directory is the last line of stdout; progress goes to stderr. Usage:
#
#   KUBEBUILDER_ASSETS="$(hack/envtest-assets.sh)" go test ./...
#
# An existing KUBEBUILDER_ASSETS holding both binaries is used as is.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# The version is the one hack/envtest/kube-apiserver builds.
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" { sub(/^v/, "", $2); print $2; exit }' \
	"${root}/hack/envtest/kube-apiserver/go.mod")"
if [[ -z "${K8S_VERSION}" ]]; then
	echo "envtest-assets: no k8s.io/kubernetes requirement in hack/envtest/kube-apiserver/go.mod" >&2
	exit 1
fi
K8S_MINOR="${K8S_VERSION%.*}"

log() { echo "envtest-assets: $*" >&2; }

# has_assets DIR: DIR holds executable kube-apiserver and etcd.
has_assets() {
	[[ -n "$1" && -x "$1/kube-apiserver" && -x "$1/etcd" ]]
}

if has_assets "${KUBEBUILDER_ASSETS:-}"; then
	echo "${KUBEBUILDER_ASSETS}"
	exit 0
fi

goos="$(go env GOOS)"
goarch="$(go env GOARCH)"
bin_dir="${root}/bin"
assets="${bin_dir}/k8s/${K8S_VERSION}-${goos}-${goarch}"

if has_assets "${assets}"; then
	echo "${assets}"
	exit 0
fi

# setup-envtest, when installed and online, is much faster than building.
setup_envtest="$(command -v setup-envtest || true)"
if [[ -z "${setup_envtest}" && -x "${bin_dir}/setup-envtest" ]]; then
	setup_envtest="${bin_dir}/setup-envtest"
fi
if [[ -n "${setup_envtest}" ]]; then
	log "trying setup-envtest for ${K8S_MINOR}.x"
	timeout_cmd=()
	if command -v timeout >/dev/null; then
		timeout_cmd=(timeout 60)
	fi
	if dir="$("${timeout_cmd[@]}" "${setup_envtest}" use -p path "${K8S_MINOR}.x" --bin-dir "${bin_dir}" 2>/dev/null)" &&
		has_assets "${dir}"; then
		echo "${dir}"
		exit 0
	fi
	log "setup-envtest failed; building from source instead"
fi

mkdir -p "${assets}"

# Serialize concurrent runs (parallel make jobs, several shells) so each
# binary is built once.
if command -v flock >/dev/null; then
	exec 9>"${assets}/.lock"
	flock 9
fi

# build NAME [go build flags...]: builds hack/envtest/NAME into the assets
# directory, through a temporary file so an interrupted build leaves nothing.
build() {
	local name="$1"
	shift
	local out="${assets}/${name}"
	if [[ -x "${out}" ]]; then
		return
	fi
	local tmp="${out}.tmp.$$"
	# shellcheck disable=SC2064 # expand tmp now: it is local
	trap "rm -f '${tmp}'" EXIT
	local start="${SECONDS}"
	(cd "${root}/hack/envtest/${name}" && GOWORK=off go build -o "${tmp}" "$@" .) >&2
	mv -f "${tmp}" "${out}"
	trap - EXIT
	log "built ${name} in $((SECONDS - start))s"
}

if [[ ! -x "${assets}/etcd" ]]; then
	log "building etcd from the module proxy (first time: about 2 minutes)"
	build etcd
fi

if [[ ! -x "${assets}/kube-apiserver" ]]; then
	log "building kube-apiserver ${K8S_VERSION} from the module proxy (first time: 15-20 minutes on 2 cores)"
	minor="${K8S_MINOR#*.}"
	build kube-apiserver -ldflags "-X k8s.io/component-base/version.gitVersion=v${K8S_VERSION} -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} -X k8s.io/component-base/version.gitMinor=${minor}"
fi

echo "${assets}"
