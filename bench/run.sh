#!/usr/bin/env bash
# bench/run.sh — measure imgcopy against the usual tools, side by side, in one run.
#
#   bench/run.sh                 full sizes: 2 GiB dense, 16 GiB ESXi-style sparse image
#   SCALE=8 bench/run.sh         everything 8 times smaller (256 MiB dense, 2 GiB sparse)
#   BENCH_DIR=/data/b bench/run.sh   where the images go (needs ~2.5x the dense size + 3.5 GiB
#                                free at full size; default: a new directory under /var/tmp)
#   KEEP=1 bench/run.sh          keep the images afterwards
#   REPEAT=5 bench/run.sh        runs of each command (default 3); the median time counts
#
# Measured (wall time with /usr/bin/time, page cache dropped before every run
# when root, every writer fsyncs):
#   1. dense image file -> file: imgcopy vs dd bs=4M conv=fsync vs cp / cat (+ sync)
#   2. ESXi-style image, 90% zeros: imgcopy vs dd vs bmaptool copy. Each tool gets its own
#      block map, made once beforehand (imgcopy -make-bmap; bmaptool create): with it both
#      read only the mapped ranges and check their checksums; imgcopy also checks that the
#      rest is zero and takes the image's SHA-256 from its map. imgcopy -no-bmap (which
#      hashes all of the image, zeros included) is shown for comparison.
#   3. compressed images (bench/zstd.sh; ONLY=zstd runs only this): the ESXi image
#      zstd-compressed: imgcopy vs zstd -dc | dd, and zstd -d (sparse writer); backups with
#      -compress zstd vs zstd -T0 -3; .xz and .gz restores vs xz -dc / gzip -dc | dd
#   4. dense image file -> block device (root: a loop device): imgcopy vs dd, buffered and oflag=direct
#   5. the block-device write path, -verify on devices and -make-bmap against sha256sum
#      (bench/dev.sh); ONLY=dev runs only this
#   6. dense image restored over SMB, SFTP and S3 on loopback (bench/remote.sh): imgcopy vs
#      smbclient -c get, sftp get, curl --aws-sigv4 (each + sync); ONLY=remote runs only this
#   7. delta restore (bench/delta.sh; root: a loop device with direct I/O holding the dense image
#      with 1% of its blocks changed): imgcopy -delta vs a full imgcopy restore and dd oflag=direct,
#      bytes written from -json and /sys/block/loopN/stat; reading the device, the image and both at
#      once with dd iflag=direct (the floor; full / floor is the most a delta can gain here), and the
#      restores again from a copy of the image in /dev/shm (DELTA_SHM=0: not); ONLY=delta runs only this
#   8. a zstd image from nginx (bench/net.sh): on loopback, and over a 20 ms RTT link between two
#      network namespaces it makes; imgcopy (parallel ranges) vs curl | zstd -d | dd oflag=direct
#      into a loop device with direct I/O; ONLY=net runs only this
# and imgcopy's peak memory (maximum resident set size), which must stay under 256 MiB.
# Ratios are throughput ratios: > 1.0 means imgcopy is faster.
# Needs: go, dd, zstd, bmaptool (bmap-tools), sgdisk (gdisk), /usr/bin/time, openssl (optional).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
export GOFLAGS="${GOFLAGS:--mod=mod}"

SCALE=${SCALE:-1}
MiB=$((1 << 20))
DENSE=$((2048 * MiB / SCALE))
SPARSE=$((16384 * MiB / SCALE))
DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/imgcopy-bench.XXXXXX)}
mkdir -p "$DIR"
for t in dd zstd bmaptool sgdisk /usr/bin/time; do
	command -v "$t" >/dev/null || { echo "bench: $t is missing (apt-get install bmap-tools gdisk zstd time)" >&2; exit 2; }
done
[[ ${KEEP:-} ]] || trap 'rm -rf "$DIR"' EXIT

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
drop() {
	sync
	if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

REPEAT=${REPEAT:-3}
RESULTS=()
# timed NAME OUT BYTES -- CMD...: queues CMD; run_queued runs the queue.
Q_NAME=() Q_OUT=() Q_BYTES=() Q_CMD=()
timed() {
	Q_NAME+=("$1") Q_OUT+=("$2") Q_BYTES+=("$3")
	shift 4
	Q_CMD+=("$(printf '%q ' "$@")")
}
# run_queued runs the queued commands REPEAT times, interleaved (A B C A B C
# ...: the machine's drift hits every command alike), each with OUT removed
# and the page cache dropped before; it records each command's median wall
# time (with that run's CPU time) and its largest max RSS. The output of the
# last run of command i is in $DIR/log.i.
run_queued() {
	local i r runs=()
	for ((r = 0; r < REPEAT; r++)); do
		for i in "${!Q_NAME[@]}"; do
			rm -f "${Q_OUT[i]}"
			drop
			eval "/usr/bin/time -f '%e %M %U %S' -o '$DIR/time' ${Q_CMD[i]}" >"$DIR/log.$i" 2>&1 ||
				{ cat "$DIR/log.$i" >&2; echo "bench: ${Q_NAME[i]} failed" >&2; exit 1; }
			runs[i]+="$(cat "$DIR/time");"
		done
	done
	for i in "${!Q_NAME[@]}"; do
		local name=${Q_NAME[i]} bytes=${Q_BYTES[i]} all rss secs usr sys cpu
		local lines
		lines=$(tr ';' '\n' <<<"${runs[i]%;}")
		all=$(cut -d' ' -f1 <<<"$lines" | tr '\n' ' ')
		rss=$(cut -d' ' -f2 <<<"$lines" | sort -n | tail -1)
		read -r secs _ usr sys <<<"$(sort -n <<<"$lines" | sed -n "$(((REPEAT + 1) / 2))p")"
		cpu=$(echo "$usr + $sys" | bc -l)
		RESULTS+=("$name;$secs;$rss;$bytes;$cpu")
		printf '  %-44s %8.2f s %9.1f MiB/s  CPU %6.2f s  RSS %6.1f MiB  (runs: %s)\n' "$name" "$secs" "$(echo "$bytes / $MiB / ($secs + 0.0001)" | bc -l)" "$cpu" "$(echo "$rss / 1024" | bc -l)" "$all" >&2
		eval "T_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$secs"
		eval "M_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$rss"
	done
	Q_NAME=() Q_OUT=() Q_BYTES=() Q_CMD=()
}
ratio() { echo "scale=2; $1 / $2" | bc -l; }

log "building imgcopy"
go build -o "$DIR/imgcopy" ./cmds/imgcopy
IMG="$DIR/imgcopy -q -progress none"

random() { # random N > file
	if command -v openssl >/dev/null; then
		openssl enc -aes-128-ctr -nosalt -pass pass:imgcopy-bench </dev/zero 2>/dev/null | head -c "$1" || true
	else
		head -c "$1" /dev/urandom
	fi
}

log "making a dense image of $((DENSE / MiB)) MiB"
random "$DENSE" >"$DIR/dense.img"
[[ $(stat -c %s "$DIR/dense.img") == "$DENSE" ]] || { echo "bench: could not make the dense image" >&2; exit 1; }

if [[ -z ${ONLY:-} || ${ONLY:-} == dev || ${ONLY:-} == zstd ]]; then
log "making an ESXi-style image of $((SPARSE / MiB)) MiB, 90% zeros"
truncate -s "$SPARSE" "$DIR/esxi.img"
# ESXi 6.x-like layout: 1, 5, 6, 7, 8, 9, 2, 3 (slot 4 empty), datastore to the end.
sgdisk -a 1 -n 1:64:8191 -t 1:EF00 -n 5:8224:520191 -n 6:520224:1032191 -n 7:1032224:1257471 -t 7:FC00 \
	-n 8:1257504:1843199 "$DIR/esxi.img" >/dev/null
if ((SPARSE > 8 * 1024 * MiB)); then
	sgdisk -a 1 -n 9:1843200:7086079 -t 9:FC00 -n 2:7086080:15472639 -n 3:15472640:0 -t 3:FB00 "$DIR/esxi.img" >/dev/null
else
	sgdisk -a 1 -n 3:1843200:0 -t 3:FB00 "$DIR/esxi.img" >/dev/null
fi
# 10% data in 8 MiB extents spread evenly over the disk (taken from the dense image).
ext=$((8 * MiB)) n=$((SPARSE / 10 / (8 * MiB))) step=$((SPARSE / (SPARSE / 10 / (8 * MiB))))
for ((i = 0; i < n; i++)); do
	off=$(((i * step + 1024 * 1024) / ext * ext))
	((off + ext < SPARSE - MiB)) || break
	dd if="$DIR/dense.img" of="$DIR/esxi.img" bs=$ext count=1 skip=$((i % (DENSE / ext))) seek=$((off / ext)) conv=notrunc status=none
done
SPARSE_DATA=$(du -B1 "$DIR/esxi.img" | cut -f1)
log "  $((SPARSE_DATA / MiB)) MiB of data allocated"
# Block maps, made once like an image server would: bmaptool's apart from
# imgcopy's (esxi.img.bmap, which imgcopy finds next to esxi.img and esxi.img.zst).
log "bmaptool create"
drop
/usr/bin/time -f '%e' -o "$DIR/time" bmaptool create -o "$DIR/bmaptool.bmap" "$DIR/esxi.img" 2>/dev/null
BMAP_CREATE=$(cat "$DIR/time")
log "imgcopy -make-bmap"
drop
/usr/bin/time -f '%e' -o "$DIR/time" $IMG -make-bmap "$DIR/esxi.img" "$DIR/esxi.img.bmap" >/dev/null
IMG_BMAP_CREATE=$(cat "$DIR/time")
if [[ -z ${ONLY:-} || ${ONLY:-} == zstd ]]; then
	log "zstd -T0 -3 (compressing the ESXi image)"
	zstd -q -T0 -3 "$DIR/esxi.img" -o "$DIR/esxi.img.zst"
fi
fi # ONLY

echo >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
. bench/remote.sh
. bench/dev.sh
. bench/delta.sh
. bench/net.sh
. bench/zstd.sh
if [[ -z ${ONLY:-} ]]; then
log "1. dense $((DENSE / MiB)) MiB file -> file"
timed "dense: imgcopy" "$DIR/out" "$DENSE" -- $IMG "$DIR/dense.img" "$DIR/out"
timed "dense: dd bs=4M conv=fsync" "$DIR/out" "$DENSE" -- dd if="$DIR/dense.img" of="$DIR/out" bs=4M conv=fsync status=none
timed "dense: cp + sync" "$DIR/out" "$DENSE" -- sh -c "cp '$DIR/dense.img' '$DIR/out' && sync '$DIR/out'"
timed "dense: cat + sync" "$DIR/out" "$DENSE" -- sh -c "cat '$DIR/dense.img' > '$DIR/out' && sync '$DIR/out'"
timed "dense: imgcopy -verify" "$DIR/out" "$DENSE" -- $IMG -verify "$DIR/dense.img" "$DIR/out"
run_queued

log "2. ESXi-style $((SPARSE / MiB)) MiB, 90% zeros, file -> file"
timed "sparse: imgcopy (its bmap)" "$DIR/out" "$SPARSE" -- $IMG "$DIR/esxi.img" "$DIR/out"
timed "sparse: imgcopy -no-bmap" "$DIR/out" "$SPARSE" -- $IMG -no-bmap "$DIR/esxi.img" "$DIR/out"
timed "sparse: dd bs=4M conv=fsync" "$DIR/out" "$SPARSE" -- dd if="$DIR/esxi.img" of="$DIR/out" bs=4M conv=fsync status=none
timed "sparse: bmaptool copy (its bmap)" "$DIR/out" "$SPARSE" -- bmaptool copy --bmap "$DIR/bmaptool.bmap" "$DIR/esxi.img" "$DIR/out"
timed "sparse: imgcopy -verify" "$DIR/out" "$SPARSE" -- $IMG -verify "$DIR/esxi.img" "$DIR/out"
run_queued
grep -q "claimed by the block map $DIR/esxi.img.bmap" "$DIR/log.0" || { cat "$DIR/log.0" >&2; echo "bench: imgcopy did not use its block map" >&2; exit 1; }

LOOP=
if [[ $(id -u) == 0 ]] && command -v losetup >/dev/null && [[ -e /dev/loop-control ]]; then
	log "4. dense $((DENSE / MiB)) MiB file -> block device (a loop device with direct I/O)"
	truncate -s "$DENSE" "$DIR/disk"
	LOOP=$(losetup --direct-io=on -f --show "$DIR/disk")
	trap 'losetup -d "$LOOP" 2>/dev/null; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	timed "device: imgcopy" "" "$DENSE" -- $IMG -yes -no-gpt-fixup "$DIR/dense.img" "$LOOP"
	timed "device: dd bs=4M conv=fsync" "" "$DENSE" -- dd if="$DIR/dense.img" of="$LOOP" bs=4M conv=fsync status=none
	timed "device: dd bs=4M oflag=direct" "" "$DENSE" -- dd if="$DIR/dense.img" of="$LOOP" bs=4M oflag=direct conv=fsync status=none
	run_queued
	cmp -n "$DENSE" "$DIR/dense.img" "$LOOP" || { echo "bench: the device differs from the image" >&2; exit 1; }
else
	log "4. skipped: a block device target needs root and loop devices"
fi
fi # ONLY
[[ -z ${ONLY:-} || ${ONLY:-} == dev ]] && dev_section
[[ -z ${ONLY:-} || ${ONLY:-} == zstd ]] && zstd_section
[[ -z ${ONLY:-} || ${ONLY:-} == remote ]] && remote_section
[[ -z ${ONLY:-} || ${ONLY:-} == delta ]] && delta_section
[[ -z ${ONLY:-} || ${ONLY:-} == net ]] && net_section

echo
echo "Results (median of $REPEAT interleaved runs each; $(nproc) CPUs, $(uname -r), dense $((DENSE / MiB)) MiB, sparse $((SPARSE / MiB)) MiB with $((${SPARSE_DATA:-0} / MiB)) MiB data)"
echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews wall times)"
printf '%-44s %9s %11s %9s %10s\n' "run" "seconds" "MiB/s" "CPU s" "max RSS"
for r in "${RESULTS[@]}"; do
	IFS=";" read -r name secs rss bytes cpu <<<"$r"
	printf '%-44s %9.2f %11.1f %9.2f %6.1f MiB\n' "$name" "$secs" "$(echo "$bytes / $MiB / ($secs + 0.0001)" | bc -l)" "$cpu" "$(echo "$rss / 1024" | bc -l)"
done
echo
echo "Throughput ratios (> 1 means imgcopy is faster):"
remote_ratios
dev_ratios
delta_ratios
net_ratios
zstd_ratios
[[ -n ${ONLY:-} ]] && exit 0
echo "  dense:  imgcopy / dd                $(ratio "$T_dense__dd_bs_4M_conv_fsync" "$T_dense__imgcopy")   (goal >= 1.0)"
echo "  dense:  imgcopy / cp                $(ratio "$T_dense__cp___sync" "$T_dense__imgcopy")"
echo "  dense:  imgcopy / cat               $(ratio "$T_dense__cat___sync" "$T_dense__imgcopy")"
echo "  sparse: imgcopy / dd                $(ratio "$T_sparse__dd_bs_4M_conv_fsync" "$T_sparse__imgcopy__its_bmap_")   (goal: far above 1)"
echo "  sparse: imgcopy / bmaptool copy     $(ratio "$T_sparse__bmaptool_copy__its_bmap_" "$T_sparse__imgcopy__its_bmap_")   (goal >= 1.0; maps made once: bmaptool create ${BMAP_CREATE}s, imgcopy -make-bmap ${IMG_BMAP_CREATE}s)"
echo "  sparse: imgcopy -no-bmap / bmaptool $(ratio "$T_sparse__bmaptool_copy__its_bmap_" "$T_sparse__imgcopy__no_bmap")   (no map: every zero byte goes through SHA-256)"
if [[ $LOOP ]]; then
	echo "  device: imgcopy / dd                $(ratio "$T_device__dd_bs_4M_conv_fsync" "$T_device__imgcopy")   (imgcopy / dd oflag=direct: $(ratio "$T_device__dd_bs_4M_oflag_direct" "$T_device__imgcopy"), goal >= 1.0)"
fi
echo "  -verify cost: dense $(ratio "$T_dense__imgcopy__verify" "$T_dense__imgcopy")x, sparse $(ratio "$T_sparse__imgcopy__verify" "$T_sparse__imgcopy__its_bmap_")x the time without"
peak=0
for v in "${!M_@}"; do
	[[ $v == M_*imgcopy* ]] || continue
	((${!v} > peak)) && peak=${!v}
done
if ((peak < 256 * 1024)); then verdict=OK; else verdict="OVER THE 256 MiB BOUND"; fi
echo "  imgcopy peak memory: $((peak / 1024)) MiB ($verdict)"
