#!/usr/bin/env bash
# build.sh — builds and tests the ESXi rescue system.
#
#   ./build.sh          build the rescue system into out/ (kernel, initramfs, USB image, PXE tree)
#   ./build.sh demo     build, then show the rescue system fixing a broken ESXi disk in QEMU
#   ./build.sh test     the whole test suite: unit tests, short fuzzing, QEMU end-to-end
#   ./build.sh deps     only install what is missing (Debian packages, Go modules)
#   ./build.sh unit     unit tests and fuzzing only (no QEMU)
#   ./build.sh e2e      QEMU end-to-end tests only (builds out/ first)
#
# Run as root on Debian: missing packages are installed with apt-get.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
export GOFLAGS="${GOFLAGS:--mod=mod}"

# Debian packages the build and the tests need (command -> package).
APT_PACKAGES=(
	gdisk:sgdisk fdisk:sfdisk dosfstools:fsck.fat mtools:mdir
	qemu-system-x86:qemu-system-x86_64 ovmf:/usr/share/ovmf/OVMF.fd ipxe-qemu:/usr/lib/ipxe/qemu/pxe-virtio.rom
	zstd:zstd xz-utils:xz gzip:gzip bmap-tools:bmaptool cpio:cpio binutils:objcopy
	util-linux:losetup iproute2:ip kmod:depmod ca-certificates:/etc/ssl/certs/ca-certificates.crt
	e2fsprogs:mkfs.ext4 diffutils:cmp
	minisign:minisign udpcast:udp-receiver vde2:vde_switch
	nginx-light:/usr/sbin/nginx rsyslog:/usr/sbin/rsyslogd
	tmux:tmux
	samba:smbd smbclient:smbclient openssh-server:sshd openssh-client:ssh-keygen curl:curl
	grub-common:grub-mkimage grub-efi-amd64-bin:/usr/lib/grub/x86_64-efi/kernel.img grub-pc-bin:/usr/lib/grub/i386-pc/boot.img
	ipxe:/usr/lib/ipxe/undionly.kpxe pxelinux:/usr/lib/PXELINUX/pxelinux.0 syslinux-common:/usr/lib/syslinux/modules/bios/ldlinux.c32
)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 2; }

deps() {
	command -v go >/dev/null || die "Go is not installed (expected /usr/local/go/bin/go, Go 1.26)"
	local missing=() p pkg probe
	for p in "${APT_PACKAGES[@]}"; do
		pkg=${p%%:*} probe=${p#*:}
		if [[ $probe == /* ]]; then [[ -e $probe ]] && continue
		else command -v "$probe" >/dev/null && continue; fi
		missing+=("$pkg")
	done
	if ((${#missing[@]})); then
		[[ $(id -u) == 0 ]] || die "missing packages ${missing[*]}: run as root or install them"
		log "installing Debian packages: ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	go mod download
	# The S3 server of the remote tests (internal/remotetest): versitygw,
	# built from the Go module proxy (Debian has no S3 server).
	if ! command -v versitygw >/dev/null && [[ ! -x "$(go env GOPATH)/bin/versitygw" ]]; then
		log "installing versitygw (S3 server for the tests) with go install"
		go install "github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION:-v1.8.0}"
	fi
}

build() {
	deps
	log "building the rescue system into out/"
	mkdir -p out
	./initramfs/build.sh out
}

# Fuzz targets run briefly by `./build.sh test` ("package target" per line).
FUZZ_TARGETS=(
	"./imaging FuzzRestore"
	"./imaging FuzzZstdStream"
	"./imaging FuzzHTTPRanges"
	"./gpt FuzzParseUndo"
	"./rescue/report FuzzExtractUndo"
	"./rescue/job FuzzParse"
	"./gpt FuzzPlanFix"
	"./gpt FuzzRead"
	"./gpt FuzzLoadLayout"
	"./gpt FuzzReadSgdiskBackup"
	"./esxi FuzzInspect"
	"./esxi FuzzParseLVMHeader"
	"./esxi FuzzParseMBR"
	"./rescue/cmdline FuzzParse"
	"./rescue/netup FuzzParseIP"
	"./rescue/coldplug FuzzFnmatch"
	"./rescue/coldplug FuzzParseUevent"
	"./rescue/inventory FuzzParsePCIIDs"
	"./bmap FuzzParse"
	"./bmap FuzzBuilderChecker"
	"./remote FuzzParse"
	"./remote/cred FuzzParse"
	"./imgsig FuzzParseManifest"
	"./udpcast FuzzParse"
	"./rescue/sshd FuzzParseAuthorizedKeys"
)
FUZZTIME=${FUZZTIME:-10s}

unit() {
	deps
	log "go vet"
	go vet ./...
	log "unit tests"
	go test -count=1 -timeout 20m $(go list ./... | grep -v /qemu-tests)
	local t
	for t in "${FUZZ_TARGETS[@]}"; do
		log "fuzzing $t for $FUZZTIME"
		set -- $t
		go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" "$1"
	done
}

e2e() {
	build
	log "QEMU end-to-end tests (logs under out/qemu-tests/)"
	local rc=0
	go test -count=1 -v -timeout 40m ./qemu-tests/... >out/qemu-tests.log 2>&1 || rc=$?
	grep -E '^(\s*--- (PASS|FAIL|SKIP)|PASS|FAIL|ok|!!!)' out/qemu-tests.log || true
	((rc == 0)) || die "QEMU end-to-end tests failed (exit $rc; full output in out/qemu-tests.log, serial logs in out/qemu-tests/)"
}

demo() {
	build
	log "demo: the incident, reproduced and fixed in QEMU"
	go run ./qemu-tests/demo
}

case "${1:-build}" in
build) build ;;
deps) deps ;;
unit) unit ;;
e2e) e2e ;;
test) unit; e2e ;;
demo) demo ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac
