#!/usr/bin/env bash
# initramfs/boottest.sh [OUT] [direct|uefi|bios|pxe]... — boots the built
# artifacts in QEMU (TCG, no KVM) and checks each reaches its init with the
# modules working.
#
# A test initramfs is the real OUT/rescue.initramfs with a small cpio
# appended whose /bin/uinit (replacing the rescue flow) loads virtio_pci and
# virtio_blk, prints the disks and the kernel command line, mounts the stick's
# FAT partition when there is one, prints
# "BOOTTEST: OK" and powers off. The USB and PXE checks use copies of the real
# OUT/rescue-usb.img and OUT/pxe with only the initramfs file swapped for the
# test one (mtools), so the boot loaders and their configs are the shipped ones.
#
#   direct  qemu -kernel/-initrd (SeaBIOS) with a virtio disk
#   uefi    OUT/rescue-usb.img under OVMF (shim + Debian's signed GRUB)
#   uefi-sb the same with Secure Boot enforced (slow under TCG: run it by name)
#   bios    OUT/rescue-usb.img under SeaBIOS (GRUB i386-pc in the MBR)
#   pxe     OUT/pxe over QEMU's TFTP with iPXE (boot.ipxe)
#   pxelinux, grubnet-bios, grubnet-efi   the same with PXELINUX and GRUB's netboot images
#           (not in the default set: run them by name)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
OUT=$(readlink -f "${1:-out}")
shift || true
TESTS=("$@")
((${#TESTS[@]})) || TESTS=(direct uefi bios pxe)
TIMEOUT=${BOOTTEST_TIMEOUT:-300}
W=$(mktemp -d /tmp/boottest.XXXXXX)
trap 'rm -rf "$W"' EXIT

mkdir -p "$W/ov/bin"
cat >"$W/ov/bin/uinit" <<'EOF'
#!/bin/sh
echo BOOTTEST: uinit started
cat /proc/cmdline
modprobe virtio_pci
modprobe virtio_blk
sleep 2
for d in /sys/block/*; do echo BOOTTEST: disk $(basename $d) $(cat $d/size) sectors; done
# The kernel cannot load modules on demand here (no /sbin/modprobe): load
# the FAT code page and charset explicitly, as the rescue init's coldplug does.
modprobe vfat
modprobe nls_cp437
modprobe nls_ascii
mkdir -p /mnt
for p in /dev/vda1 /dev/vdb1; do
	if mount -r -t vfat $p /mnt; then
		test -f /mnt/rescue/initramfs && echo BOOTTEST: fat $p has rescue/initramfs
		umount /mnt
	fi
done
echo BOOTTEST: modules $(ls /lib/modules)
echo BOOTTEST: OK
sync
sleep 1
poweroff
EOF
chmod 755 "$W/ov/bin/uinit"
(cd "$W/ov" && find bin | cpio -o -H newc -R 0:0 --quiet >"$W/overlay.cpio")
size=$(stat -c %s "$OUT/rescue.initramfs")
((size % 4 == 0)) || { echo "boottest: $OUT/rescue.initramfs is $size bytes, not a multiple of 4: nothing can be appended" >&2; exit 1; }
cat "$OUT/rescue.initramfs" "$W/overlay.cpio" >"$W/initramfs"
truncate -s 64M "$W/disk.img"

# run NAME QEMU-ARGS...: boot, wait for the marker, report.
run() {
	local name=$1 start rc=0
	shift
	start=$(date +%s%N)
	timeout "$TIMEOUT" qemu-system-x86_64 -m 1024 -nographic -no-reboot "$@" >"$W/$name.log" 2>&1 || rc=$?
	local ms=$((($(date +%s%N) - start) / 1000000))
	local secs=$((ms / 1000)).$((ms % 1000 / 100))
	cp "$W/$name.log" "$OUT/boottest-$name.log"
	local ok=true
	[[ $name == uefi-sb ]] && ! grep -aq 'Secure boot enabled' "$W/$name.log" && ok=false
	# Booted from the stick: its FAT partition must mount (vfat, nls_cp437, nls_ascii).
	[[ $name == uefi* || $name == bios ]] && ! grep -aq 'BOOTTEST: fat /dev/vd.1 has rescue/initramfs' "$W/$name.log" && ok=false
	if $ok && grep -aq 'BOOTTEST: OK' "$W/$name.log" && grep -aEq 'BOOTTEST: disk vd[a-z] 131072 sectors' "$W/$name.log"; then
		printf 'PASS %-7s %5ss  %s\n' "$name" "$secs" "$(grep -a -m1 -o 'Kernel command line:.*' "$W/$name.log" | tr -d '\r')"
	else
		printf 'FAIL %-7s %5ss  (qemu rc %s, log %s)\n' "$name" "$secs" "$rc" "$OUT/boottest-$name.log"
		tail -n 15 "$W/$name.log" | tr -d '\r' | sed 's/^/    /'
		return 1
	fi
}

fail=0
for t in "${TESTS[@]}"; do
	case $t in
	direct)
		run direct -kernel "$OUT/rescue.vmlinuz" -initrd "$W/initramfs" \
			-append "console=ttyS0 panic=-1" -nic none \
			-drive file="$W/disk.img",format=raw,if=virtio || fail=1
		;;
	uefi | uefi-sb | bios)
		cp --sparse=always "$OUT/rescue-usb.img" "$W/usb.img"
		mcopy -o -i "$W/usb.img@@$((4096 * 512))" "$W/initramfs" ::/rescue/initramfs
		fw=()
		[[ $t == uefi ]] && fw=(-bios /usr/share/ovmf/OVMF.fd)
		if [[ $t == uefi-sb ]]; then
			# OVMF with Secure Boot enforced and Microsoft's keys enrolled (shim is signed by them).
			cp /usr/share/OVMF/OVMF_VARS_4M.ms.fd "$W/vars.fd"
			fw=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
				-drive if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd,readonly=on
				-drive if=pflash,format=raw,unit=1,file="$W/vars.fd")
		fi
		# Stick and 64 MiB test disk both on virtio (much faster than IDE for
		# GRUB under TCG); bootindex makes the firmware boot the stick.
		run "$t" "${fw[@]}" -nic none -drive file="$W/disk.img",format=raw,if=virtio \
			-drive file="$W/usb.img",format=raw,if=none,id=stick -device virtio-blk-pci,drive=stick,bootindex=1 || fail=1
		;;
	pxe | pxelinux | grubnet-bios | grubnet-efi)
		rm -rf "$W/pxe"
		cp -r "$OUT/pxe" "$W/pxe"
		cp "$W/initramfs" "$W/pxe/initramfs"
		fw=()
		case $t in
		pxe) nbp=boot.ipxe ;;
		pxelinux) nbp=pxelinux.0 ;;
		grubnet-bios) nbp=boot/grub/i386-pc/core.0 ;;
		grubnet-efi) nbp=boot/grub/x86_64-efi/core.efi fw=(-bios /usr/share/ovmf/OVMF.fd) ;;
		esac
		run "$t" "${fw[@]}" -netdev user,id=n0,restrict=on,tftp="$W/pxe",bootfile="$nbp" \
			-device virtio-net-pci,netdev=n0 -boot n \
			-drive file="$W/disk.img",format=raw,if=virtio || fail=1
		;;
	*) echo "boottest: unknown test $t" >&2; exit 2 ;;
	esac
done
exit $fail
