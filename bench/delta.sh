# bench/delta.sh — section 7 of bench/run.sh (sourced by it; ONLY=delta runs
# it alone): a delta restore. The dense image goes onto a loop device with
# direct I/O that already holds it with 1% of its 64 KiB blocks changed (4 KiB
# of random bytes at a random place in each), as a disk restored once before
# and used since: imgcopy -delta against a full imgcopy restore and dd
# oflag=direct in the same run, interleaved. Before every run the device is
# put back into that state (through the loop device, not timed) and the page
# cache dropped. Bytes written come from imgcopy's -json (Delta.Written; a full
# restore's DataBytes + ZeroBytes) and, for every command, from the device's
# own counter (write sectors in /sys/block/loopN/stat). After each -delta run
# the device is compared with the image (cmp). A last row only reads the
# device (dd iflag=direct): what a delta restore must read at least, so the
# speed-up over a full restore is bounded by how much cheaper reading the
# device is than writing it.

# delta_median prints the median of its arguments (numbers).
delta_median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }

delta_section() {
	if [[ $(id -u) != 0 ]] || ! command -v losetup >/dev/null || [[ ! -e /dev/loop-control ]]; then
		log "7. skipped: the delta restore needs root and loop devices"
		return 0
	fi
	command -v python3 >/dev/null || { log "7. skipped: python3 is missing (it reads imgcopy's -json)"; return 0; }
	log "7. delta restore: dense $((DENSE / MiB)) MiB image onto a loop device (direct I/O) holding it with 1% of its 64 KiB blocks changed"
	cp "$DIR/dense.img" "$DIR/old.img"
	DELTA_CHANGED=$(python3 - "$DIR/old.img" <<-'PY'
	import os, random, sys
	path = sys.argv[1]
	size = os.path.getsize(path)
	blocks = size // 65536
	rng = random.Random(1)
	pick = rng.sample(range(blocks), max(1, blocks // 100))
	with open(path, "r+b") as f:
	    for b in pick:
	        f.seek(b * 65536 + rng.randrange(16) * 4096)
	        f.write(rng.randbytes(4096))
	print(len(pick) * 65536)
	PY
	)
	truncate -s "$DENSE" "$DIR/ddisk"
	DLOOP=$(losetup --direct-io=on -f --show "$DIR/ddisk")
	trap '[[ -n ${DLOOP:-} ]] && losetup -d "$DLOOP" 2>/dev/null; [[ -n ${LOOP:-} ]] && losetup -d "$LOOP" 2>/dev/null; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	local dev stat names cmds i r w0 w1 r0 r1 t
	dev=$(basename "$DLOOP")
	stat=/sys/block/$dev/stat
	# The last row is no restore: it reads the device once, what a delta
	# restore cannot avoid (its floor, next to the image's read).
	names=("delta: imgcopy -delta" "delta: imgcopy (full restore)" "delta: dd bs=4M oflag=direct" "delta: dd iflag=direct (read the device)")
	cmds=(
		"$IMG -json -yes -no-gpt-fixup -delta '$DIR/dense.img' '$DLOOP'"
		"$IMG -json -yes -no-gpt-fixup '$DIR/dense.img' '$DLOOP'"
		"dd if='$DIR/dense.img' of='$DLOOP' bs=4M oflag=direct conv=fsync status=none"
		"dd if='$DLOOP' of=/dev/null bs=4M iflag=direct status=none"
	)
	local -a secs rss cpu wsys rsys wjson
	for ((r = 0; r < REPEAT; r++)); do
		for i in "${!names[@]}"; do
			dd if="$DIR/old.img" of="$DLOOP" bs=4M oflag=direct conv=fsync status=none
			drop
			read -r _ _ r0 _ _ _ w0 _ <"$stat"
			eval "/usr/bin/time -f '%e %M %U %S' -o '$DIR/time' ${cmds[i]}" >"$DIR/dout.$i" 2>"$DIR/dlog.$i" ||
				{ cat "$DIR/dlog.$i" "$DIR/dout.$i" >&2; echo "bench: ${names[i]} failed" >&2; exit 1; }
			read -r _ _ r1 _ _ _ w1 _ <"$stat"
			read -r t m u s <"$DIR/time"
			secs[i]+="$t " rss[i]+="$m " cpu[i]+="$(echo "$u + $s" | bc -l) "
			wsys[i]+="$(((w1 - w0) * 512)) " rsys[i]+="$(((r1 - r0) * 512)) "
			if [[ ${names[i]} == *imgcopy* ]]; then
				wjson[i]+="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); d=r.get("Delta"); print(d["Written"] if d else r["DataBytes"]+r["ZeroBytes"])' "$DIR/dout.$i") "
			fi
			if ((i == 0)); then
				cmp -n "$DENSE" "$DIR/dense.img" "$DLOOP" || { echo "bench: after imgcopy -delta the device differs from the image" >&2; exit 1; }
			fi
		done
	done
	losetup -d "$DLOOP"
	DLOOP=
	DELTA_ROWS=()
	for i in "${!names[@]}"; do
		local name=${names[i]} ms mr mc mw ws
		# shellcheck disable=SC2086
		ms=$(delta_median ${secs[i]}) mr=$(printf '%s\n' ${rss[i]} | sort -n | tail -1) mc=$(delta_median ${cpu[i]})
		# shellcheck disable=SC2086
		mw=$(delta_median ${wsys[i]}) ws="-"
		# shellcheck disable=SC2086
		[[ -n ${wjson[i]:-} ]] && ws=$(delta_median ${wjson[i]})
		RESULTS+=("$name;$ms;$mr;$DENSE;$mc")
		eval "T_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$ms"
		eval "M_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$mr"
		# shellcheck disable=SC2086
		DELTA_ROWS+=("$(printf '  %-40s %7.2f s  written: -json %9s, %s %8.1f MiB; read %s %8.1f MiB  (runs: %s)' \
			"$name" "$ms" "$([[ $ws == - ]] && echo - || printf '%.1f MiB' "$(echo "$ws / $MiB" | bc -l)")" "$dev" \
			"$(echo "$mw / $MiB" | bc -l)" "$dev" "$(echo "$(delta_median ${rsys[i]}) / $MiB" | bc -l)" "${secs[i]% }")")
		[[ $i == 0 ]] && DELTA_WJSON=$ws DELTA_WSYS=$mw DELTA_RSS=$mr
	done
	printf '%s\n' "${DELTA_ROWS[@]}" >&2
	DELTA_DONE=1
}

delta_ratios() {
	[[ ${DELTA_DONE:-} ]] || return 0
	local pct pcts rss verdict
	pct=$(echo "scale=2; 100 * $DELTA_WJSON / $DENSE" | bc -l)
	pcts=$(echo "scale=2; 100 * $DELTA_WSYS / $DENSE" | bc -l)
	rss=$((DELTA_RSS / 1024))
	verdict=OK
	((rss <= 64)) || verdict="OVER THE 64 MiB GOAL"
	echo "  delta:  full imgcopy / imgcopy -delta   $(ratio "$T_delta__imgcopy__full_restore_" "$T_delta__imgcopy__delta")   (goal >= 3.0; dd oflag=direct / imgcopy -delta: $(ratio "$T_delta__dd_bs_4M_oflag_direct" "$T_delta__imgcopy__delta"))"
	echo "  delta:  reading the device alone takes $(ratio "$T_delta__dd_iflag_direct__read_the_device_" "$T_delta__imgcopy__delta")x the time of imgcopy -delta (a delta restore must read all of it; here reading costs as much as writing: dd write / dd read $(ratio "$T_delta__dd_bs_4M_oflag_direct" "$T_delta__dd_iflag_direct__read_the_device_"))"
	echo "  delta:  bytes written by -delta         ${pct}% of the image (-json), ${pcts}% by the device's counter   (goal <= 2%; $((DELTA_CHANGED / 1024)) KiB of 64 KiB blocks differ)"
	echo "  delta:  imgcopy -delta peak memory      $rss MiB ($verdict; goal <= 64 MiB)"
	printf '%s\n' "${DELTA_ROWS[@]}"
}
