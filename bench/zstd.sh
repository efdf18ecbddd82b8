# bench/zstd.sh — section 3 of bench/run.sh (sourced by it; ONLY=zstd runs it
# alone): compressed images, against the compressor's own tool in the same
# run, interleaved.
#   3a. the ESXi image compressed with zstd -T0 -3 (one frame), restored to a
#       file: imgcopy with its block map and with -no-bmap, vs zstd -dc | dd and
#       zstd -d (its sparse writer) + sync
#   3b. backups: imgcopy -compress zstd of the ESXi image and of the dense image
#       vs zstd -T0 -3 (+ sync) of the same file; the backup's image is checked
#       with zstd -t, and restored and compared (cmp) with the source once
#   3c. the ESXi image as .xz (xz -T0 -1) and .gz (gzip -1): imgcopy vs
#       xz -dc | dd and gzip -dc | dd (pigz -dc too when installed)
# Every restore's output is compared (cmp) with the uncompressed image once.
# ZSTD_PARTS=b (default abc) runs only the named parts; BASE_IMGCOPY=PATH adds
# 3b's rows for another imgcopy binary (e.g. main's build), interleaved with
# the others: a before/after in one run.

zstd_section() {
	local parts=${ZSTD_PARTS:-abc}
	if [[ $parts == *a* ]]; then
	log "3. the ESXi image zstd-compressed ($(($(stat -c %s "$DIR/esxi.img.zst") / MiB)) MiB, $(zstd -lv "$DIR/esxi.img.zst" 2>/dev/null | awk '/Frames/ {print $NF}') frame(s))"
	timed "zstd: imgcopy (its bmap)" "$DIR/out" "$SPARSE" -- $IMG "$DIR/esxi.img.zst" "$DIR/out"
	timed "zstd: imgcopy -no-bmap" "$DIR/out" "$SPARSE" -- $IMG -no-bmap "$DIR/esxi.img.zst" "$DIR/out"
	timed "zstd: zstd -dc | dd bs=4M conv=fsync" "$DIR/out" "$SPARSE" -- sh -c "zstd -q -dc '$DIR/esxi.img.zst' | dd of='$DIR/out' bs=4M iflag=fullblock conv=fsync status=none"
	timed "zstd: zstd -d (sparse) + sync" "$DIR/out" "$SPARSE" -- sh -c "zstd -q -d '$DIR/esxi.img.zst' -o '$DIR/out' && sync '$DIR/out'"
	run_queued
	rm -f "$DIR/out"
	$IMG "$DIR/esxi.img.zst" "$DIR/out" >/dev/null
	cmp "$DIR/esxi.img" "$DIR/out" || { echo "bench: imgcopy's zstd restore differs from the image" >&2; exit 1; }
	fi

	if [[ $parts == *b* ]]; then
	log "3b. backups with -compress zstd vs zstd -T0 -3"
	timed "zstd backup: imgcopy -compress zstd (ESXi)" "$DIR/bk.img.zst" "$SPARSE" -- $IMG -compress zstd "$DIR/esxi.img" "$DIR/bk.img.zst"
	timed "zstd backup: zstd -T0 -3 + sync (ESXi)" "$DIR/bk.img.zst" "$SPARSE" -- sh -c "zstd -q -f -T0 -3 '$DIR/esxi.img' -o '$DIR/bk.img.zst' && sync '$DIR/bk.img.zst'"
	timed "zstd backup: imgcopy -compress zstd (dense)" "$DIR/bk.img.zst" "$DENSE" -- $IMG -compress zstd "$DIR/dense.img" "$DIR/bk.img.zst"
	timed "zstd backup: zstd -T0 -3 + sync (dense)" "$DIR/bk.img.zst" "$DENSE" -- sh -c "zstd -q -f -T0 -3 '$DIR/dense.img' -o '$DIR/bk.img.zst' && sync '$DIR/bk.img.zst'"
	if [[ ${BASE_IMGCOPY:-} ]]; then
		timed "zstd backup: base imgcopy (ESXi)" "$DIR/bk.img.zst" "$SPARSE" -- "$BASE_IMGCOPY" -q -progress none -compress zstd "$DIR/esxi.img" "$DIR/bk.img.zst"
		timed "zstd backup: base imgcopy (dense)" "$DIR/bk.img.zst" "$DENSE" -- "$BASE_IMGCOPY" -q -progress none -compress zstd "$DIR/dense.img" "$DIR/bk.img.zst"
	fi
	run_queued
	rm -f "$DIR"/bk.img.zst*
	$IMG -compress zstd "$DIR/esxi.img" "$DIR/bk.img.zst" >/dev/null
	ZSTD_BK_SIZE=$(stat -c %s "$DIR/bk.img.zst")
	zstd -q -t "$DIR/bk.img.zst" || { echo "bench: zstd -t refuses imgcopy's backup" >&2; exit 1; }
	zstd -q -dc "$DIR/bk.img.zst" | cmp - "$DIR/esxi.img" || { echo "bench: imgcopy's backup differs from the image" >&2; exit 1; }
	rm -f "$DIR"/bk.img.zst*
	$IMG -compress zstd "$DIR/dense.img" "$DIR/bk.img.zst" >/dev/null
	ZSTD_BK_DENSE=$(stat -c %s "$DIR/bk.img.zst")
	zstd -q -t "$DIR/bk.img.zst" || { echo "bench: zstd -t refuses imgcopy's dense backup" >&2; exit 1; }
	zstd -q -f -T0 -3 "$DIR/dense.img" -o "$DIR/bk.zst"
	ZSTD_CLI_DENSE=$(stat -c %s "$DIR/bk.zst")
	rm -f "$DIR"/bk.img.zst* "$DIR/bk.zst"
	fi

	if [[ $parts == *c* ]]; then
	log "3c. the ESXi image as .xz and .gz"
	xz -T0 -1 -c "$DIR/esxi.img" >"$DIR/esxi.img.xz"
	gzip -1 -c "$DIR/esxi.img" >"$DIR/esxi.img.gz"
	timed "xz: imgcopy (its bmap)" "$DIR/out" "$SPARSE" -- $IMG -bmap "$DIR/esxi.img.bmap" "$DIR/esxi.img.xz" "$DIR/out"
	timed "xz: xz -dc | dd bs=4M conv=fsync" "$DIR/out" "$SPARSE" -- sh -c "xz -dc '$DIR/esxi.img.xz' | dd of='$DIR/out' bs=4M iflag=fullblock conv=fsync status=none"
	timed "gzip: imgcopy (its bmap)" "$DIR/out" "$SPARSE" -- $IMG -bmap "$DIR/esxi.img.bmap" "$DIR/esxi.img.gz" "$DIR/out"
	timed "gzip: gzip -dc | dd bs=4M conv=fsync" "$DIR/out" "$SPARSE" -- sh -c "gzip -dc '$DIR/esxi.img.gz' | dd of='$DIR/out' bs=4M iflag=fullblock conv=fsync status=none"
	if command -v pigz >/dev/null; then
		timed "gzip: pigz -dc | dd bs=4M conv=fsync" "$DIR/out" "$SPARSE" -- sh -c "pigz -dc '$DIR/esxi.img.gz' | dd of='$DIR/out' bs=4M iflag=fullblock conv=fsync status=none"
	fi
	run_queued
	local c
	for c in xz gz; do
		rm -f "$DIR/out"
		$IMG -bmap "$DIR/esxi.img.bmap" "$DIR/esxi.img.$c" "$DIR/out" >/dev/null
		cmp "$DIR/esxi.img" "$DIR/out" || { echo "bench: imgcopy's $c restore differs from the image" >&2; exit 1; }
	done
	rm -f "$DIR/esxi.img.xz" "$DIR/esxi.img.gz"
	fi
	ZSTD_DONE=$parts
}

zstd_ratios() {
	[[ ${ZSTD_DONE:-} ]] || return 0
	if [[ $ZSTD_DONE == *a* ]]; then
	echo "  zstd:   imgcopy / zstd -d           $(ratio "$T_zstd__zstd__d__sparse____sync" "$T_zstd__imgcopy__its_bmap_")   (goal >= 0.9; -no-bmap: $(ratio "$T_zstd__zstd__d__sparse____sync" "$T_zstd__imgcopy__no_bmap"))"
	echo "  zstd:   imgcopy / (zstd -dc | dd)   $(ratio "$T_zstd__zstd__dc___dd_bs_4M_conv_fsync" "$T_zstd__imgcopy__its_bmap_")   (-no-bmap: $(ratio "$T_zstd__zstd__dc___dd_bs_4M_conv_fsync" "$T_zstd__imgcopy__no_bmap"))"
	fi
	if [[ $ZSTD_DONE == *b* ]]; then
	echo "  zstd backup: imgcopy / zstd -T0 -3  ESXi $(ratio "$T_zstd_backup__zstd__T0__3___sync__ESXi_" "$T_zstd_backup__imgcopy__compress_zstd__ESXi_"), dense $(ratio "$T_zstd_backup__zstd__T0__3___sync__dense_" "$T_zstd_backup__imgcopy__compress_zstd__dense_")   (goal >= 0.9; imgcopy also hashes the image, makes its block map and manifest; its image $((ZSTD_BK_SIZE / MiB)) MiB vs zstd's $(($(stat -c %s "$DIR/esxi.img.zst") / MiB)) MiB)"
	echo "  zstd backup sizes, dense: imgcopy $ZSTD_BK_DENSE bytes, zstd -T0 -3 $ZSTD_CLI_DENSE bytes"
	if [[ ${BASE_IMGCOPY:-} ]]; then
		echo "  zstd backup: base imgcopy / zstd -T0 -3  ESXi $(ratio "$T_zstd_backup__zstd__T0__3___sync__ESXi_" "$T_zstd_backup__base_imgcopy__ESXi_"), dense $(ratio "$T_zstd_backup__zstd__T0__3___sync__dense_" "$T_zstd_backup__base_imgcopy__dense_")"
	fi
	fi
	if [[ $ZSTD_DONE == *c* ]]; then
	echo "  xz:     imgcopy / (xz -dc | dd)     $(ratio "$T_xz__xz__dc___dd_bs_4M_conv_fsync" "$T_xz__imgcopy__its_bmap_")   (goal >= 0.9)"
	echo "  gzip:   imgcopy / (gzip -dc | dd)   $(ratio "$T_gzip__gzip__dc___dd_bs_4M_conv_fsync" "$T_gzip__imgcopy__its_bmap_")   (goal >= 0.9)"
	if [[ -n ${T_gzip__pigz__dc___dd_bs_4M_conv_fsync:-} ]]; then
		echo "  gzip:   imgcopy / (pigz -dc | dd)   $(ratio "$T_gzip__pigz__dc___dd_bs_4M_conv_fsync" "$T_gzip__imgcopy__its_bmap_")"
	fi
	fi
}
