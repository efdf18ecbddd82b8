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
# the device is compared with the image (cmp). Three rows only read: the
# device (dd iflag=direct), the image (dd iflag=direct), and both at once
# (two dd iflag=direct side by side): what a delta restore must read at
# least. Here the image and the loop device's backing file share one disk
# (/dev/vda), so the slowest of those rows is the delta restore's floor and
# full restore / that floor is the most any delta restore can gain on this
# storage; it is printed next to the 3x goal. A variant (DELTA_SHM=0 leaves
# it out) restores from a copy of the image in /dev/shm onto the same
# device: the image no longer competes for the disk (as when it comes from
# the network or another disk), and the floor is the device read alone.

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
	trap '[[ -n ${DLOOP:-} ]] && losetup -d "$DLOOP" 2>/dev/null; [[ -n ${LOOP:-} ]] && losetup -d "$LOOP" 2>/dev/null; [[ -n ${DELTA_SHMIMG:-} ]] && rm -f "$DELTA_SHMIMG"; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	local dev stat names cmds i r w0 w1 r0 r1 t
	dev=$(basename "$DLOOP")
	stat=/sys/block/$dev/stat
	# The last three rows are no restore: they read what a delta restore
	# cannot avoid reading (its floor).
	names=("delta: imgcopy -delta" "delta: imgcopy (full restore)" "delta: dd bs=4M oflag=direct"
		"delta: dd iflag=direct (read the device)" "delta: dd iflag=direct (read the image)" "delta: both reads at once (2 dd iflag=direct)")
	cmds=(
		"$IMG -json -yes -no-gpt-fixup -delta '$DIR/dense.img' '$DLOOP'"
		"$IMG -json -yes -no-gpt-fixup '$DIR/dense.img' '$DLOOP'"
		"dd if='$DIR/dense.img' of='$DLOOP' bs=4M oflag=direct conv=fsync status=none"
		"dd if='$DLOOP' of=/dev/null bs=4M iflag=direct status=none"
		"dd if='$DIR/dense.img' of=/dev/null bs=4M iflag=direct status=none"
		"sh -c \"dd if='$DIR/dense.img' of=/dev/null bs=4M iflag=direct status=none & dd if='$DLOOP' of=/dev/null bs=4M iflag=direct status=none; wait\""
	)
	# The variant: the same restores from a copy of the image in /dev/shm.
	DELTA_SHMIMG=
	if [[ ${DELTA_SHM:-1} != 0 ]] && [[ -d /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR == 2 {print $4}') > 2 * DENSE / 1024)); then
		DELTA_SHMIMG=$(mktemp /dev/shm/imgcopy-bench-delta.XXXXXX)
		cp "$DIR/dense.img" "$DELTA_SHMIMG"
		names+=("delta, image in /dev/shm: imgcopy -delta" "delta, image in /dev/shm: imgcopy (full)")
		cmds+=("$IMG -json -yes -no-gpt-fixup -delta '$DELTA_SHMIMG' '$DLOOP'" "$IMG -json -yes -no-gpt-fixup '$DELTA_SHMIMG' '$DLOOP'")
	fi
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
			if [[ ${names[i]} == *"imgcopy -delta" ]]; then
				cmp -n "$DENSE" "$DIR/dense.img" "$DLOOP" || { echo "bench: after imgcopy -delta the device differs from the image" >&2; exit 1; }
			fi
		done
	done
	losetup -d "$DLOOP"
	DLOOP=
	[[ -n $DELTA_SHMIMG ]] && rm -f "$DELTA_SHMIMG"
	DELTA_ROWS=() DELTA_T=()
	for i in "${!names[@]}"; do
		local name=${names[i]} ms mr mc mw ws
		# shellcheck disable=SC2086
		ms=$(delta_median ${secs[i]}) mr=$(printf '%s\n' ${rss[i]} | sort -n | tail -1) mc=$(delta_median ${cpu[i]})
		# shellcheck disable=SC2086
		mw=$(delta_median ${wsys[i]}) ws="-"
		# shellcheck disable=SC2086
		[[ -n ${wjson[i]:-} ]] && ws=$(delta_median ${wjson[i]})
		RESULTS+=("$name;$ms;$mr;$DENSE;$mc")
		DELTA_T[i]=$ms
		eval "T_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$ms"
		eval "M_$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')=$mr"
		# shellcheck disable=SC2086
		DELTA_ROWS+=("$(printf '  %-40s %7.2f s  written: -json %9s, %s %8.1f MiB; read %s %8.1f MiB  (runs: %s)' \
			"$name" "$ms" "$([[ $ws == - ]] && echo - || printf '%.1f MiB' "$(echo "$ws / $MiB" | bc -l)")" "$dev" \
			"$(echo "$mw / $MiB" | bc -l)" "$dev" "$(echo "$(delta_median ${rsys[i]}) / $MiB" | bc -l)" "${secs[i]% }")")
		[[ $i == 0 ]] && DELTA_WJSON=$ws DELTA_WSYS=$mw DELTA_RSS=$mr
		[[ $name == *"imgcopy -delta" ]] && ((mr > DELTA_RSS)) && DELTA_RSS=$mr
	done
	printf '%s\n' "${DELTA_ROWS[@]}" >&2
	DELTA_DONE=1
}

delta_ratios() {
	[[ ${DELTA_DONE:-} ]] || return 0
	local pct pcts rss verdict t=("${DELTA_T[@]}") floor
	pct=$(echo "scale=2; 100 * $DELTA_WJSON / $DENSE" | bc -l)
	pcts=$(echo "scale=2; 100 * $DELTA_WSYS / $DENSE" | bc -l)
	rss=$((DELTA_RSS / 1024))
	verdict=OK
	((rss <= 64)) || verdict="OVER THE 64 MiB GOAL"
	# The floor: the slowest of the read rows (device, image, both at once).
	floor=$(printf '%s\n' "${t[3]}" "${t[4]}" "${t[5]}" | sort -g | tail -1)
	echo "  delta:  full imgcopy / imgcopy -delta   $(ratio "${t[1]}" "${t[0]}")   (goal >= 3.0; the most this storage allows: full / max(read rows) = $(ratio "${t[1]}" "$floor"); dd oflag=direct / imgcopy -delta: $(ratio "${t[2]}" "${t[0]}"))"
	echo "  delta:  imgcopy -delta / its floor      $(ratio "${t[0]}" "$floor")x the time of the slowest read row ($floor s; target <= 1.1); $(ratio "${t[0]}" "${t[3]}")x the device read alone"
	echo "  delta:  read rows: device ${t[3]} s, image ${t[4]} s, both at once ${t[5]} s (image and device share /dev/vda here); dd write / dd read of the device $(ratio "${t[2]}" "${t[3]}"); full / device read $(ratio "${t[1]}" "${t[3]}") (the bound were the image elsewhere)"
	if ((${#t[@]} > 6)); then
		echo "  delta:  image in /dev/shm: full / -delta $(ratio "${t[7]}" "${t[6]}")   (the most it allows: full / device read = $(ratio "${t[7]}" "${t[3]}"); -delta / device read $(ratio "${t[6]}" "${t[3]}"))"
	fi
	echo "  delta:  bytes written by -delta         ${pct}% of the image (-json), ${pcts}% by the device's counter   (goal <= 2%; $((DELTA_CHANGED / 1024)) KiB of 64 KiB blocks differ)"
	echo "  delta:  imgcopy -delta peak memory      $rss MiB ($verdict; goal <= 64 MiB)"
	printf '%s\n' "${DELTA_ROWS[@]}"
}
