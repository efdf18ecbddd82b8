#!/usr/bin/env bash
# initramfs/build.sh OUT — builds the rescue system's boot artifacts into OUT:
#
#   OUT/rescue.vmlinuz     stock Debian kernel (from the linux-image-*-amd64 .deb)
#   OUT/kver               its version (the lib/modules directory name)
#   OUT/rescue.initramfs   u-root busybox initramfs + kernel modules, zstd-compressed
#   OUT/modules/KVER/      the bundled modules tree (modules.dep, modules.alias, ...)
#   OUT/rescue-usb.img     GPT USB stick image, ESP "RESCUE", GRUB for UEFI and BIOS (+ .bmap)
#   OUT/pxe/               TFTP/HTTP root: kernel, initramfs, iPXE/PXELINUX/GRUB configs
#
# Called by ../build.sh after the Debian packages and Go modules are installed.
# Downloads (kernel, firmware, signed shim and GRUB .debs) are cached in .cache/ (RESCUE_CACHE).
# Environment:
#   KERNEL_PACKAGE     e.g. linux-image-6.1.0-56-amd64 (default: what linux-image-amd64 depends on)
#   SOURCE_DATE_EPOCH  time stamps in the images (default: the last commit's time)
#   RESCUE_CMDLINE     default hands-off kernel arguments (default: rescue.action=shell)
#   RESCUE_NONFREE     1 (default): also bundle firmware from Debian's non-free-firmware; 0: main only
#   RESCUE_DEBIAN_MIRROR, RESCUE_DEBIAN_SUITE  where non-free-firmware comes from (default: the
#                      machine's Debian mirror and suite from /etc/apt/sources.list*)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
OUT=$(mkdir -p "${1:?usage: initramfs/build.sh OUTDIR}" && readlink -f "$1")
CACHE=$(mkdir -p "${RESCUE_CACHE:-.cache}" && readlink -f "${RESCUE_CACHE:-.cache}")
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
export GOFLAGS="${GOFLAGS:--mod=mod}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
RESCUE_CMDLINE=${RESCUE_CMDLINE:-rescue.action=shell}
CONSOLE_ARGS="console=tty0 console=ttyS0,115200n8"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'initramfs/build.sh: %s\n' "$*" >&2; exit 2; }

# fetch_deb PACKAGE DIR: download PACKAGE's .deb (candidate version) into
# DIR once and unpack it into DIR/<package>_<version>/; prints that path.
# Stale package lists get one `apt-get update`; without a network, an
# already unpacked version of the package is used (with a warning).
# APTOPT (an array) holds extra apt options, e.g. the build's own sources list.
APTOPT=()
fetch_deb() {
	local pkg=$1 dir=$2 ver root try
	mkdir -p "$dir"
	for try in 1 2; do
		ver=$(apt-cache "${APTOPT[@]}" show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
		if [[ -n $ver ]]; then
			root="$dir/${pkg}_${ver//:/%3a}"
			[[ -e $root/.unpacked ]] && { echo "$root"; return; }
			if (cd "$dir" && apt-get -qq -o APT::Sandbox::User=root "${APTOPT[@]}" download "$pkg=$ver" >&2); then
				rm -rf "$root"
				dpkg-deb -x "$dir/${pkg}_${ver//:/%3a}_"*.deb "$root"
				touch "$root/.unpacked"
				echo "$root"
				return
			fi
		fi
		((try == 1)) && [[ $(id -u) == 0 ]] && apt-get "${APTOPT[@]}" update -qq >&2 || break
	done
	root=$(ls -d "$dir/${pkg}_"*/.unpacked 2>/dev/null | sort -V | tail -n1)
	[[ -n $root ]] || die "cannot download the Debian package $pkg"
	printf 'WARNING: cannot download %s; using the cached %s\n' "$pkg" "$(dirname "$root")" >&2
	dirname "$root"
}

# --- kernel -----------------------------------------------------------------
KPKG=${KERNEL_PACKAGE:-$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)}
if [[ -z $KPKG ]]; then
	[[ $(id -u) == 0 ]] && apt-get update -qq
	KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
fi
[[ -n $KPKG ]] || die "cannot resolve linux-image-amd64 to a kernel package"
log "kernel: $KPKG"
# The .deb stays at the top of the cache, where rescue/coldplug tests look for it too.
KROOT=$(fetch_deb "$KPKG" "$CACHE")
KVER=$(basename "$(ls -d "$KROOT"/lib/modules/*/ | head -n1)")
[[ -f $KROOT/boot/vmlinuz-$KVER ]] || die "no vmlinuz-$KVER in $KPKG"
[[ -f $KROOT/lib/modules/$KVER/modules.dep ]] || depmod -b "$KROOT" "$KVER"
grep -q '^CONFIG_RD_ZSTD=y' "$KROOT/boot/config-$KVER" || die "kernel $KVER cannot unpack a zstd initramfs"
grep -q '^CONFIG_MODULE_COMPRESS_NONE=y' "$KROOT/boot/config-$KVER" ||
	die "kernel $KVER ships compressed modules: mkmodules reads plain .ko files"
FWROOTS=$(fetch_deb firmware-linux-free "$CACHE/firmware")

# --- non-free firmware ----------------------------------------------------------
# Debian's non-free-firmware component, through an apt configuration of the
# build's own (sources list, package lists and state under $CACHE/apt; the
# machine's apt setup is never touched). Its Contents index says which
# package ships each firmware file the bundled modules declare; only those
# packages are downloaded and only those files bundled (mkmodules).
# (Debian main's only firmware for these drivers is firmware-linux-free,
# above: main's Contents-all has nothing else under lib/firmware for them.)
RESCUE_NONFREE=${RESCUE_NONFREE:-1}
APTNF=()
# debian_source: "URI SUITE" of the machine's Debian archive (first deb entry
# whose URI ends in /debian), from one-line and deb822 sources files.
debian_source() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[[ -f $f ]] && awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($i ~ /\/debian\/?$/) { print $i, $(i+1); exit } }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] && awk 'BEGIN { RS = ""; FS = "\n" } /Types:[^\n]*deb([ \n]|$)/ { u = ""; s = ""
			for (i = 1; i <= NF; i++) { if ($i ~ /^URIs:/) { split($i, a, " "); u = a[2] } if ($i ~ /^Suites:/) { split($i, b, " "); s = b[2] } }
			if (u ~ /\/debian\/?$/) { print u, s; exit } }' "$f"
	done
}
mkdir -p "$CACHE/bin" "$CACHE/logs"
if [[ $RESCUE_NONFREE == 1 ]]; then
	read -r NF_URI NF_SUITE < <(debian_source | head -n1; echo)
	NF_URI=${RESCUE_DEBIAN_MIRROR:-$NF_URI}
	NF_SUITE=${RESCUE_DEBIAN_SUITE:-$NF_SUITE}
	APTD="$CACHE/apt"
	mkdir -p "$APTD/lists/partial" "$APTD/archives/partial"
	APTNF=(-o "Dir::Etc::sourcelist=$APTD/sources.list" -o Dir::Etc::sourceparts=/dev/null
		-o "Dir::State::Lists=$APTD/lists" -o "Dir::State::status=/dev/null" -o "Dir::Cache=$APTD" -o Dir::Cache::pkgcache=
		-o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root
		-o 'Acquire::IndexTargets::deb::Contents-rescue::MetaKey=$(COMPONENT)/Contents-all'
		-o 'Acquire::IndexTargets::deb::Contents-rescue::ShortDescription=Contents-all'
		-o 'Acquire::IndexTargets::deb::Contents-rescue::Description=$(RELEASE)/$(COMPONENT) Contents-all'
		-o Acquire::IndexTargets::deb::Contents-rescue::PDiffs=false)
	if [[ -z $NF_URI || -z $NF_SUITE ]]; then
		printf '\033[1;31mWARNING: no Debian mirror in /etc/apt/sources.list*; building without non-free firmware (set RESCUE_DEBIAN_MIRROR and RESCUE_DEBIAN_SUITE)\033[0m\n' >&2
		APTNF=()
	else
		log "non-free firmware from $NF_URI $NF_SUITE non-free-firmware"
		printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s non-free-firmware\n' "$NF_URI" "$NF_SUITE" >"$APTD/sources.list"
		# apt-get update exits 0 when a mirror cannot be reached; its W:/E: lines say so.
		if ! apt-get -qq "${APTNF[@]}" update >"$CACHE/logs/apt-nonfree.log" 2>&1 || grep -q '^[WE]: ' "$CACHE/logs/apt-nonfree.log"; then
			printf '\033[1;31mWARNING: cannot reach %s (see %s); non-free firmware: %s\033[0m\n' "$NF_URI" \
				"$CACHE/logs/apt-nonfree.log" "$(ls "$APTD"/lists/*Contents-all* >/dev/null 2>&1 && echo 'from the cached package lists' || echo 'none in this build')" >&2
		fi
		CONTENTS=$(ls "$APTD"/lists/*non-free-firmware_Contents-all* 2>/dev/null | head -n1 || true)
		[[ -n $CONTENTS ]] || printf '\033[1;31mWARNING: no non-free-firmware index; building without non-free firmware (firmware-missing.txt lists it)\033[0m\n' >&2
	fi
	if ((${#APTNF[@]})) && [[ -n ${CONTENTS:-} ]]; then
		# Every firmware file the bundled modules declare, then the packages shipping them.
		go build -trimpath -o "$CACHE/bin/mkmodules" ./initramfs/mkmodules
		NFTMP="$CACHE/nonfree-probe"
		rm -rf "$NFTMP"
		"$CACHE/bin/mkmodules" -root "$KROOT" -kver "$KVER" -list initramfs/modules.txt -o "$NFTMP" >/dev/null
		mapfile -t NF_PKGS < <(sed -n 's/^[^#][^:]*: //p' "$NFTMP/lib/modules/$KVER/firmware-missing.txt" | sed 's|^|lib/firmware/|' |
			sort -u | awk 'NR == FNR { want[$1] = 1; next } ($1 in want) { split($NF, c, ","); n = split(c[1], p, "/"); print p[n] }' - \
			<(/usr/lib/apt/apt-helper cat-file "$CONTENTS") | sort -u)
		rm -rf "$NFTMP"
		log "non-free firmware packages: ${NF_PKGS[*]:-none}"
		APTOPT=("${APTNF[@]}")
		for p in "${NF_PKGS[@]}"; do
			if r=$(fetch_deb "$p" "$CACHE/firmware"); then
				FWROOTS+=",$r"
			else
				printf '\033[1;31mWARNING: cannot download %s; its firmware stays missing\033[0m\n' "$p" >&2
			fi
		done
		APTOPT=()
	fi
else
	log "non-free firmware: left out (RESCUE_NONFREE=0)"
fi

# --- build helpers ----------------------------------------------------------
go build -trimpath -o "$CACHE/bin/mkmodules" ./initramfs/mkmodules
go build -trimpath -o "$CACHE/bin/mkusb" ./initramfs/mkusb

# --- staging tree: modules, firmware, /etc files ------------------------------
STAGE="$CACHE/stage"
rm -rf "$STAGE"
mkdir -p "$STAGE"
log "kernel modules for $KVER"
"$CACHE/bin/mkmodules" -root "$KROOT" -kver "$KVER" -list initramfs/modules.txt -firmware "$FWROOTS" -o "$STAGE" >&2
depmod -b "$STAGE" "$KVER"
cp -r initramfs/files/etc "$STAGE/etc"
# PCI names for the hardware report (rescue/inventory): Debian's pci.ids.
PCIROOT=$(fetch_deb pci.ids "$CACHE/misc")
install -D -m 0644 "$PCIROOT/usr/share/misc/pci.ids" "$STAGE/usr/share/misc/pci.ids"
install -D -m 0644 "$PCIROOT/usr/share/doc/pci.ids/copyright" "$STAGE/usr/share/doc/pci.ids/copyright"
cat >"$STAGE/etc/rescue-release" <<EOF
NAME="ESXi rescue"
KERNEL=$KVER
KERNEL_PACKAGE=$KPKG
SOURCE=$(git describe --always --dirty 2>/dev/null || echo unknown)
EOF
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- initramfs ----------------------------------------------------------------
# u-root commands: the blank imports in tools.go (one list for go.mod and the image).
mapfile -t UROOT_CMDS < <(sed -n 's/^\s*_ "\(github.com\/u-root\/u-root\/cmds\/[^"]*\)"$/\1/p' tools.go)
# Our commands: those that exist and compile (others may still be writing them).
OUR_CMDS=()
ALL_CMDS=()
for d in cmds/*/; do
	[[ -f $d/main.go ]] && ALL_CMDS+=("./${d%/}")
done
# Compiling them together (no linking) is the fast path; one by one only on failure.
if ((${#ALL_CMDS[@]} > 1)) && go build "${ALL_CMDS[@]}" 2>/dev/null; then
	OUR_CMDS=("${ALL_CMDS[@]}")
else for d in "${ALL_CMDS[@]}"; do
	d=${d#./}
	if go build -o /dev/null "./$d" 2>"$CACHE/logs/build-$(basename "$d").log"; then
		OUR_CMDS+=("./$d")
	else
		printf '\033[1;31mWARNING: %s does not build; left out of the initramfs:\033[0m\n' "$d" >&2
		head -n 5 "$CACHE/logs/build-$(basename "$d").log" >&2
	fi
done; fi
UINIT=()
[[ " ${OUR_CMDS[*]} " == *" ./cmds/rescue "* ]] && UINIT=(-uinitcmd=rescue)
log "initramfs: ${#UROOT_CMDS[@]} u-root commands + ${OUR_CMDS[*]:-none of ours yet}"
# Native programs the rescue runs (udp-receiver for udpcast:// images), at
# their Debian paths; u-root's -files adds the shared libraries and the
# loader that ldd lists.
NATIVE_BINS=(/usr/bin/udp-receiver)
NATIVE_FILES=()
for b in "${NATIVE_BINS[@]}"; do
	[[ -x $b ]] || die "$b is missing (Debian package udpcast; ./build.sh deps installs it)"
	NATIVE_FILES+=(-files "$b:${b#/}")
done
for c in /usr/share/doc/udpcast/copyright /usr/share/doc/libc6/copyright; do # their licenses (GPL, LGPL)
	[[ -f $c ]] && NATIVE_FILES+=(-files "$c:${c#/}")
done
rm -f "$CACHE/initramfs.cpio"
go tool u-root -o "$CACHE/initramfs.cpio" -build=bb -defaultsh=gosh "${UINIT[@]}" \
	-files "$STAGE/lib:lib" -files "$STAGE/etc:etc" -files "$STAGE/usr:usr" "${NATIVE_FILES[@]}" \
	"${UROOT_CMDS[@]}" "${OUR_CMDS[@]}" 2>&1 | grep -v -e 'recommended Go versions' -e 'Some packages may not compile' \
	-e 'golang.org/doc/install' -e 'golang.org/dl/go' >&2 || true
[[ -s $CACHE/initramfs.cpio ]] || die "u-root failed"
# Each native program must start from the archive alone (libraries, loader).
if [[ $(id -u) == 0 ]] && command -v chroot >/dev/null; then
	CHK=$(mktemp -d)
	(cd "$CHK" && cpio -idm --quiet <"$CACHE/initramfs.cpio")
	for b in "${NATIVE_BINS[@]}"; do
		ran=$(chroot "$CHK" "$b" --help 2>&1 || true) # prints its usage, exit status 1
		[[ $ran == *--portbase* ]] || { rm -rf "$CHK"; die "$b does not run from the initramfs (missing libraries?): $ran"; }
	done
	rm -rf "$CHK"
fi
zstd -q -19 -T0 -f "$CACHE/initramfs.cpio" -o "$OUT/rescue.initramfs"
# Pad to 4 bytes: the kernel only finds a further (uncompressed) cpio appended
# to this one (tests add files that way) at a 4-byte aligned offset.
truncate -s %4 "$OUT/rescue.initramfs"
cp "$KROOT/boot/vmlinuz-$KVER" "$OUT/rescue.vmlinuz"
echo "$KVER" >"$OUT/kver"
rm -rf "$OUT/modules"
mkdir -p "$OUT/modules"
cp -r "$STAGE/lib/modules/$KVER" "$OUT/modules/$KVER"

# --- PXE tree -------------------------------------------------------------------
log "PXE tree"
PXE="$OUT/pxe"
rm -rf "$PXE"
mkdir -p "$PXE/pxelinux.cfg" "$PXE/boot/grub"
cp "$OUT/rescue.vmlinuz" "$PXE/vmlinuz"
cp "$OUT/rescue.initramfs" "$PXE/initramfs"
sedq() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
subst() { sed -e "s|@CONSOLE@|$(sedq "$CONSOLE_ARGS")|g" -e "s|@RESCUE@|$(sedq "$RESCUE_CMDLINE")|g" -e "s|@KVER@|$KVER|g" "$@"; }
subst initramfs/boot/boot.ipxe >"$PXE/boot.ipxe"
subst initramfs/boot/pxelinux.cfg >"$PXE/pxelinux.cfg/default"
cp initramfs/boot/pxe-README.md "$PXE/README.md"
# Boot loaders from Debian packages, for a TFTP server that has none yet.
for f in /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/PXELINUX/pxelinux.0 /usr/lib/PXELINUX/lpxelinux.0 \
	/usr/lib/syslinux/modules/bios/ldlinux.c32; do
	[[ -f $f ]] && cp "$f" "$PXE/"
done
for p in x86_64-efi i386-pc; do
	[[ -d /usr/lib/grub/$p ]] && grub-mknetdir --net-directory="$PXE" --subdir=boot/grub -d "/usr/lib/grub/$p" >/dev/null
done
subst initramfs/boot/grub-netboot.cfg >"$PXE/boot/grub/grub.cfg"
# GRUB's own parser on the shipped configs (grub-common): a syntax error
# would only show at boot, as a GRUB prompt instead of the job check.
for c in "$PXE/boot/grub/grub.cfg" initramfs/boot/usb-grub.cfg; do
	grub-script-check "$c" || die "$c: GRUB syntax error (grub-script-check)"
done

# --- USB stick image --------------------------------------------------------------
log "USB stick image"
USBW="$CACHE/usb"
rm -rf "$USBW"
mkdir -p "$USBW"
# UEFI: Debian's signed shim and GRUB, so the stick also boots with Secure Boot on
# (the Debian kernel is signed too). Shim starts grubx64.efi from its own
# directory; that GRUB looks for $prefix/grub.cfg with prefix /EFI/debian.
SHIM="$(fetch_deb shim-signed "$CACHE/efi")/usr/lib/shim/shimx64.efi.signed"
SGRUB="$(fetch_deb grub-efi-amd64-signed "$CACHE/efi")/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
[[ -f $SHIM && -f $SGRUB ]] || die "no signed shim or GRUB in the Debian packages"
printf '# Debian'"'"'s signed GRUB reads this file; the configuration is /boot/grub/grub.cfg.\nsource /boot/grub/grub.cfg\n' >"$USBW/debian-grub.cfg"
# Legacy BIOS: GRUB core.img in the BIOS boot partition, boot.img in the MBR.
GRUB_MODS="part_gpt fat normal linux echo test configfile search search_label ls cat sleep reboot halt help"
printf 'set root="${root},gpt1"\nset prefix="(${root})/boot/grub"\n' >"$USBW/bios-early.cfg"
grub-mkimage -O i386-pc -p /boot/grub -c "$USBW/bios-early.cfg" -o "$USBW/core.img" $GRUB_MODS biosdisk serial terminal
subst initramfs/boot/usb-grub.cfg >"$USBW/grub.cfg"
subst initramfs/boot/usb-README.txt >"$USBW/README.txt"
"$CACHE/bin/mkusb" -o "$OUT/rescue-usb.img" -label RESCUE \
	-grub-boot /usr/lib/grub/i386-pc/boot.img -grub-core "$USBW/core.img" \
	/EFI/BOOT/BOOTX64.EFI="$SHIM" /EFI/BOOT/grubx64.efi="$SGRUB" /EFI/debian/grub.cfg="$USBW/debian-grub.cfg" \
	/boot/grub/grub.cfg="$USBW/grub.cfg" \
	/rescue/vmlinuz="$OUT/rescue.vmlinuz" /rescue/initramfs="$OUT/rescue.initramfs" /README.txt="$USBW/README.txt"
# A block map for `bmaptool copy`, which then writes only the blocks in use.
command -v bmaptool >/dev/null && bmaptool -q create -o "$OUT/rescue-usb.img.bmap" "$OUT/rescue-usb.img"

log "artifacts:"
(cd "$OUT" && ls -l rescue.vmlinuz rescue.initramfs rescue-usb.img 2>/dev/null | awk '{printf "    %-20s %6.1f MiB\n", $NF, $5/1048576}' >&2)
# Kernel + initramfs must stay small enough for slow PXE/TFTP and small sticks.
BOOT_BYTES=$(($(stat -c %s "$OUT/rescue.vmlinuz") + $(stat -c %s "$OUT/rescue.initramfs")))
printf '    kernel + initramfs   %6.1f MiB (limit 60 MiB); firmware: %d files bundled, %d missing (%s)\n' \
	"$(awk "BEGIN { print $BOOT_BYTES / 1048576 }")" "$(grep -c '^[^#]' "$OUT/modules/$KVER/firmware.txt")" \
	"$(grep -c '^[^#]' "$OUT/modules/$KVER/firmware-missing.txt" || true)" \
	"$([[ $RESCUE_NONFREE == 1 ]] && echo 'Debian main + non-free-firmware' || echo 'Debian main only, RESCUE_NONFREE=0')" >&2
((BOOT_BYTES <= 60 * 1048576)) || die "kernel + initramfs are $BOOT_BYTES bytes, over the 60 MiB limit"
