#!/usr/bin/env bash
# Installs the packages the privileged tests and the demo need: nft,
# iptables (both backends) and ipset (test/diff compares address sets with
# iptables' -m set). Only acts when something is missing.
set -euo pipefail
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v iptables-nft-restore >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ipset >/dev/null 2>&1 || missing+=(ipset)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing ${missing[*]}: install them as root (apt-get install ${missing[*]})" >&2
	exit 0
fi
echo "installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq "${missing[@]}" >/dev/null
