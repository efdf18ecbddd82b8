# bench/dev.sh — section 5 of bench/run.sh (sourced by it; ONLY=dev runs it
# alone): the block-device write path, -verify and -make-bmap, each against
# the tool that sets its goal, interleaved in the same run:
#   5a. imgcopy -make-bmap vs sha256sum IMAGE (the hash it must compute) and
#       bmaptool create, on the ESXi-style image       goal <= 1.1x sha256sum
#   5b. dense image -> loop device with direct I/O: imgcopy, imgcopy -verify,
#       dd bs=4M oflag=direct conv=fsync               goals >= 1.0x dd, -verify <= 1.3x
#   5c. ESXi-style image -> the same kind of device, over stale data (so the
#       zeros must be zeroed): imgcopy, imgcopy -verify, bmaptool copy
#                                                      goal -verify <= 1.3x
#   5d. -verify cost onto files (as in sections 1 and 2, here so that ONLY=dev
#       measures it): dense and ESXi-style image -> new file, with and without
#                                                      goal -verify <= 1.3x
# DEV_NO_BMAP=1 skips 5a (sha256sum alone takes ~35 s per run at SCALE=8).
# Uses run.sh's DIR, IMG, DENSE, SPARSE, timed, run_queued and ratio.

dev_section() {
	if [[ ${DEV_NO_BMAP:-} ]]; then
		log "5a. skipped (DEV_NO_BMAP)"
	else
	log "5a. -make-bmap of the ESXi-style $((SPARSE / MiB)) MiB image vs sha256sum and bmaptool create"
	timed "bmap: imgcopy -make-bmap" "$DIR/mk.bmap" "$SPARSE" -- $IMG -make-bmap "$DIR/esxi.img" "$DIR/mk.bmap"
	timed "bmap: sha256sum" "" "$SPARSE" -- sh -c "sha256sum '$DIR/esxi.img' >/dev/null"
	timed "bmap: bmaptool create" "$DIR/mk2.bmap" "$SPARSE" -- bmaptool create -o "$DIR/mk2.bmap" "$DIR/esxi.img"
	run_queued
	DEV_BMAP=1
	fi

	log "5d. -verify onto files: dense $((DENSE / MiB)) MiB and ESXi-style $((SPARSE / MiB)) MiB -> a new file"
	timed "devf: dense imgcopy" "$DIR/out" "$DENSE" -- $IMG "$DIR/dense.img" "$DIR/out"
	timed "devf: dense imgcopy -verify" "$DIR/out" "$DENSE" -- $IMG -verify "$DIR/dense.img" "$DIR/out"
	timed "devf: sparse imgcopy" "$DIR/out" "$SPARSE" -- $IMG "$DIR/esxi.img" "$DIR/out"
	timed "devf: sparse imgcopy -verify" "$DIR/out" "$SPARSE" -- $IMG -verify "$DIR/esxi.img" "$DIR/out"
	run_queued
	DEV_FILE=1

	if ! [[ $(id -u) == 0 ]] || ! command -v losetup >/dev/null || ! [[ -e /dev/loop-control ]]; then
		log "5b/5c. skipped: block device targets need root and loop devices"
		return 0
	fi
	truncate -s "$SPARSE" "$DIR/devdisk"
	DEV_LOOP=$(losetup --direct-io=on -f --show "$DIR/devdisk")
	trap 'losetup -d "$DEV_LOOP" 2>/dev/null; [[ -n ${LOOP:-} ]] && losetup -d "$LOOP" 2>/dev/null; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	log "5b. dense $((DENSE / MiB)) MiB -> $DEV_LOOP (direct I/O): imgcopy, imgcopy -verify, dd oflag=direct"
	timed "devd: imgcopy" "" "$DENSE" -- $IMG -yes -no-gpt-fixup "$DIR/dense.img" "$DEV_LOOP"
	timed "devd: imgcopy -verify" "" "$DENSE" -- $IMG -yes -no-gpt-fixup -verify "$DIR/dense.img" "$DEV_LOOP"
	timed "devd: dd bs=4M oflag=direct" "" "$DENSE" -- dd if="$DIR/dense.img" of="$DEV_LOOP" bs=4M oflag=direct conv=fsync status=none
	run_queued
	cmp -n "$DENSE" "$DIR/dense.img" "$DEV_LOOP" || { echo "bench: $DEV_LOOP differs from the dense image" >&2; exit 1; }
	log "5c. ESXi-style $((SPARSE / MiB)) MiB -> $DEV_LOOP over stale data: imgcopy, imgcopy -verify, bmaptool copy"
	# Stale data everywhere, so that zero regions must really be zeroed.
	local i
	for ((i = 0; i < SPARSE / DENSE; i++)); do
		dd if="$DIR/dense.img" of="$DEV_LOOP" bs=4M seek=$((i * DENSE / (4 * MiB))) oflag=direct status=none
	done
	timed "devs: imgcopy (its bmap)" "" "$SPARSE" -- $IMG -yes -no-gpt-fixup "$DIR/esxi.img" "$DEV_LOOP"
	timed "devs: imgcopy -verify" "" "$SPARSE" -- $IMG -yes -no-gpt-fixup -verify "$DIR/esxi.img" "$DEV_LOOP"
	timed "devs: bmaptool copy (its bmap)" "" "$SPARSE" -- bmaptool copy --bmap "$DIR/bmaptool.bmap" "$DIR/esxi.img" "$DEV_LOOP"
	run_queued
	cmp "$DIR/esxi.img" "$DEV_LOOP" || { echo "bench: $DEV_LOOP differs from the ESXi-style image" >&2; exit 1; }
	losetup -d "$DEV_LOOP"
	DEV_DEV=1
}

dev_ratios() {
	if [[ ${DEV_BMAP:-} ]]; then
		echo "  -make-bmap: time / sha256sum's       $(ratio "$T_bmap__imgcopy__make_bmap" "$T_bmap__sha256sum")x   (goal <= 1.1x; bmaptool create: $(ratio "$T_bmap__imgcopy__make_bmap" "$T_bmap__bmaptool_create")x its time)"
	fi
	if [[ ${DEV_FILE:-} ]]; then
		echo "  file -verify cost: dense $(ratio "$T_devf__dense_imgcopy__verify" "$T_devf__dense_imgcopy")x, sparse $(ratio "$T_devf__sparse_imgcopy__verify" "$T_devf__sparse_imgcopy")x the time without   (goal <= 1.3x)"
	fi
	[[ ${DEV_DEV:-} ]] || return 0
	echo "  device dense: imgcopy / dd oflag=direct  $(ratio "$T_devd__dd_bs_4M_oflag_direct" "$T_devd__imgcopy")   (goal >= 1.0)"
	echo "  device -verify cost: dense $(ratio "$T_devd__imgcopy__verify" "$T_devd__imgcopy")x, sparse $(ratio "$T_devs__imgcopy__verify" "$T_devs__imgcopy__its_bmap_")x the time without   (goal <= 1.3x)"
	echo "  device sparse: imgcopy / bmaptool copy  $(ratio "$T_devs__bmaptool_copy__its_bmap_" "$T_devs__imgcopy__its_bmap_")   (goal >= 1.0)"
}
