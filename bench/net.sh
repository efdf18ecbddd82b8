# bench/net.sh — section 8 of bench/run.sh (sourced by it; ONLY=net runs it
# alone): restores of a zstd image served by Debian's nginx, into a loop
# device with direct I/O (a file when not root), against the stock pipeline
# `curl URL | zstd -d | dd oflag=direct` in the same run, interleaved.
#
#   a. loopback: nginx on 127.0.0.1 (its own configuration under $DIR/net,
#      no system service touched).
#   b. a link with 20 ms RTT: two network namespaces made here (server and
#      client, addresses 10.203.0.1/.2 that exist only inside them) joined
#      by bench/tundelay, which delays every packet 10 ms each way. This
#      kernel has no netem (CONFIG_NET_SCH_NETEM is off: `tc qdisc add ...
#      netem` answers "Specified qdisc kind is unknown"), so the delay is
#      added in user space between two TUN devices (MTU 1500, with TSO/GRO
#      like a real NIC). No rate limit: the single stream is then bounded by
#      its TCP window (the default Linux buffers: tcp_wmem 4 MiB on the
#      server) over 20 ms, the case where several connections help; the
#      link's own ceiling is what tundelay moves on this loaded machine.
#      tundelay runs with real-time priority (chrt -f) so that it keeps
#      its delay on a loaded machine, and reports how many packets it
#      delivered more than 1 ms late (see bench/tundelay for what the link
#      emulates and what was measured).
#      NET_RATE=MBIT sets a rate (with a 5 ms drop-tail queue) to try
#      bounded links, NET_DELAY=50ms another one-way delay. imgcopy (4 connections in ranges, and -http-conns 1)
#      vs one curl, both restoring, and one curl only downloading to
#      /dev/null: what a single stream can bring at all.
# Needs root for b (namespaces) and nginx (nginx-light), curl, zstd.

net_free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# net_nginx NAME LISTEN [NETNS]: starts nginx serving $DIR/net/www on LISTEN.
net_nginx() {
	local d=$DIR/net/$1
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<-CONF
	daemon off;
	master_process off;
	worker_processes 1;
	pid $d/nginx.pid;
	error_log $d/error.log;
	events { worker_connections 64; }
	http {
		access_log off;
		client_body_temp_path $d/body;
		proxy_temp_path $d/proxy;
		fastcgi_temp_path $d/fastcgi;
		uwsgi_temp_path $d/uwsgi;
		scgi_temp_path $d/scgi;
		sendfile on;
		server { listen $2; root $DIR/net/www; }
	}
	CONF
	if [[ ${3:-} ]]; then
		ip netns exec "$3" "$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out" 2>&1 &
	else
		"$NGINX" -p "$d" -c "$d/nginx.conf" -e "$d/error.log" >"$d/out" 2>&1 &
	fi
	NET_PIDS+=($!)
}

net_cleanup() {
	local p
	for p in "${NET_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${NET_PIDS[@]}" 2>/dev/null || true
	NET_PIDS=()
	[[ -n ${NET_NSS:-} ]] && ip netns del "$NET_NSS" 2>/dev/null
	[[ -n ${NET_NSC:-} ]] && ip netns del "$NET_NSC" 2>/dev/null
	NET_NSS= NET_NSC=
	[[ -n ${NLOOP:-} ]] && losetup -d "$NLOOP" 2>/dev/null
	NLOOP=
	return 0
}

# net_wait URL [NETNS]: waits until the server answers.
net_wait() {
	local i
	for i in $(seq 100); do
		${2:+ip netns exec "$2"} curl -sf -o /dev/null -r 0-0 "$1" && return 0
		sleep 0.1
	done
	echo "bench: the web server at $1 does not answer" >&2
	cat "$DIR"/net/*/error.log >&2
	exit 1
}

net_section() {
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	for t in "$NGINX" curl zstd python3; do
		command -v "$t" >/dev/null || [[ -x $t ]] || { log "8. skipped: $t is missing (build.sh deps installs nginx-light, curl)"; return 0; }
	done
	NET_PIDS=()
	trap 'net_cleanup; [[ -n ${LOOP:-} ]] && losetup -d "$LOOP" 2>/dev/null; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	mkdir -p "$DIR/net/www"
	chmod 755 "$DIR" "$DIR/net" "$DIR/net/www"
	# The image: the dense image's data in every other 8 MiB extent, zeros
	# between (as a disk half full), compressed like an image server's.
	local img=$DIR/net/net.img ext=$((8 * MiB)) i
	truncate -s "$DENSE" "$img"
	for ((i = 0; i < DENSE / ext; i += 2)); do
		dd if="$DIR/dense.img" of="$img" bs=$ext count=1 skip=$i seek=$i conv=notrunc status=none
	done
	zstd -q -T0 -3 "$img" -o "$DIR/net/www/net.img.zst"
	chmod 644 "$DIR/net/www/net.img.zst"
	NET_ZST=$(stat -c %s "$DIR/net/www/net.img.zst")
	local dst=$DIR/net/out
	if [[ $(id -u) == 0 ]] && command -v losetup >/dev/null && [[ -e /dev/loop-control ]]; then
		truncate -s "$DENSE" "$DIR/net/disk"
		NLOOP=$(losetup --direct-io=on -f --show "$DIR/net/disk")
		dst=$NLOOP
		NET_DST="a loop device with direct I/O"
	else
		NET_DST="a file (not root: no loop device)"
	fi
	local dd="dd of='$dst' bs=4M iflag=fullblock oflag=direct conv=fsync status=none"

	log "8a. zstd image ($((NET_ZST / MiB)) MiB, $((DENSE / MiB)) MiB raw) from nginx on loopback into $NET_DST"
	local port url
	port=$(net_free_port)
	url="http://127.0.0.1:$port/net.img.zst"
	net_nginx lo "127.0.0.1:$port"
	net_wait "$url"
	timed "http lo: imgcopy" "" "$DENSE" -- $IMG -yes -no-gpt-fixup "$url" "$dst"
	timed "http lo: curl | zstd -d | dd oflag=direct" "" "$DENSE" -- sh -c "curl -sf '$url' | zstd -q -d | $dd"
	run_queued
	cmp -n "$DENSE" "$img" "$dst" || { echo "bench: the loopback restore differs from the image" >&2; exit 1; }
	net_cleanup

	if [[ $(id -u) != 0 ]] || ! command -v ip >/dev/null; then
		log "8b. skipped: the 20 ms link needs root and ip (network namespaces)"
		NET_DONE=lo
		return 0
	fi
	if [[ $dst == /dev/loop* ]]; then
		NLOOP=$(losetup --direct-io=on -f --show "$DIR/net/disk")
		dst=$NLOOP
		dd="dd of='$dst' bs=4M iflag=fullblock oflag=direct conv=fsync status=none"
	fi
	log "8b. the same over a link with a round trip of twice ${NET_DELAY:-10ms} (network namespaces, tundelay ${NET_DELAY:-10ms} each way${NET_RATE:+, $NET_RATE Mbit/s})"
	go build -o "$DIR/tundelay" ./bench/tundelay
	NET_NSS=bench-net-s$$ NET_NSC=bench-net-c$$
	local ns
	for ns in "$NET_NSS" "$NET_NSC"; do
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip -n "$ns" tuntap add tun0 mode tun
		ip -n "$ns" link set tun0 mtu 1500 up
	done
	ip -n "$NET_NSS" addr add 10.203.0.1 peer 10.203.0.2 dev tun0
	ip -n "$NET_NSC" addr add 10.203.0.2 peer 10.203.0.1 dev tun0
	# Real-time priority when it can have it: a link must not wait for a
	# CPU (under load an ordinary tundelay delivered half its packets
	# late, by 8-10 ms on average, and the round trip grew to 35-170 ms).
	local rt=
	chrt -f 20 true 2>/dev/null && rt="chrt -f 20"
	$rt "$DIR/tundelay" -a "$NET_NSS" -b "$NET_NSC" -delay "${NET_DELAY:-10ms}" ${NET_RATE:+-rate "$NET_RATE"} >"$DIR/net/tundelay.out" 2>&1 &
	NET_TD_PID=$!
	NET_PIDS+=($!)
	url="http://10.203.0.1:8080/net.img.zst"
	net_nginx link "10.203.0.1:8080" "$NET_NSS"
	net_wait "$url" "$NET_NSC"
	NET_RTT=$(ip netns exec "$NET_NSC" curl -s -o /dev/null -w '%{time_connect}' -r 0-0 "$url")
	local in="ip netns exec $NET_NSC"
	timed "link: imgcopy (4 connections)" "" "$DENSE" -- $in $IMG -yes -no-gpt-fixup "$url" "$dst"
	timed "link: imgcopy -http-conns 1" "" "$DENSE" -- $in $IMG -yes -no-gpt-fixup -http-conns 1 "$url" "$dst"
	timed "link: curl | zstd -d | dd oflag=direct" "" "$DENSE" -- $in sh -c "curl -sf '$url' | zstd -q -d | $dd"
	timed "link: curl -o /dev/null (download only)" "" "$NET_ZST" -- $in curl -sf -o /dev/null "$url"
	net_remote_link "$in" "$dst" "$dd"
	run_queued
	cmp -n "$DENSE" "$img" "$dst" || { echo "bench: the restore over the link differs from the image" >&2; exit 1; }
	kill "$NET_TD_PID" 2>/dev/null
	wait "$NET_TD_PID" 2>/dev/null
	NET_TD_STATS=$(grep '^tundelay ' "$DIR/net/tundelay.out" | sed 's/^/      /')
	NET_TD_RT=${rt:-"no (chrt -f failed: an ordinary process)"}
	net_cleanup
	NET_DONE=link
}

# net_remote_link IN DST DD: queues the S3 and SMB restores over the link
# (versitygw and smbd in the server namespace, serving the same zstd
# file) against curl --aws-sigv4 | zstd -d | dd and smbclient get | zstd
# -d | dd; skipped when a server is missing. versitygw runs with
# --keep-alive, as S3 services keep connections (without it, it closes
# each after one answer and every 2 MiB range would start a new TCP
# connection in slow start). smbd listens on all of the
# namespace's addresses (only lo and the link: it ignores a point-to-point
# TUN device in "interfaces =").
net_remote_link() {
	local in=$1 dst=$2 dd=$3 r=$DIR/net/remote t
	VERSITYGW=$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")
	for t in smbd pdbedit smbclient "$VERSITYGW"; do
		command -v "$t" >/dev/null || [[ -x $t ]] || { log "  S3/SMB over the link skipped: $t is missing"; return 0; }
	done
	mkdir -p "$r"/{private,state,lock,cache,pid,ncalrpc,s3/images}
	ln "$DIR/net/www/net.img.zst" "$r/s3/images/net.img.zst"
	bench_smb_conf "$r" 4445 "$DIR/net/www" yes
	printf 'bench-Pa55\nbench-Pa55\n' | pdbedit -s "$r/smb.conf" -a -u nobody -t >/dev/null
	ip netns exec "$NET_NSS" setsid smbd --foreground --no-process-group -s "$r/smb.conf" >"$r/smbd.out" 2>&1 &
	NET_PIDS+=($!)
	ip netns exec "$NET_NSS" "$VERSITYGW" --access bench --secret bench-S3cret-key --port 10.203.0.1:7070 --keep-alive --quiet posix "$r/s3" >"$r/vgw.out" 2>&1 &
	NET_PIDS+=($!)
	printf 'user=nobody\npassword=bench-Pa55\ns3_access_key=bench\ns3_secret_key=bench-S3cret-key\n' >"$r/cred"
	printf 'username=nobody\npassword=bench-Pa55\n' >"$r/smbauth"
	local p
	for p in 4445 7070; do
		for _ in $(seq 100); do ip netns exec "$NET_NSC" bash -c "exec 3<>/dev/tcp/10.203.0.1/$p" 2>/dev/null && break; sleep 0.1; done
	done
	local s3="s3://images/net.img.zst?endpoint=http://10.203.0.1:7070&region=us-east-1"
	timed "link s3: imgcopy (4 connections)" "" "$DENSE" -- $in $IMG -yes -no-gpt-fixup -cred "$r/cred" "$s3" "$dst"
	timed "link s3: curl --aws-sigv4 | zstd -d | dd" "" "$DENSE" -- $in sh -c "curl -sf -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 aws:amz:us-east-1:s3 --user bench:bench-S3cret-key 'http://10.203.0.1:7070/images/net.img.zst' | zstd -q -d | $dd"
	timed "link smb: imgcopy (4 sessions)" "" "$DENSE" -- $in $IMG -yes -no-gpt-fixup -cred "$r/cred" "smb://10.203.0.1:4445/images/net.img.zst" "$dst"
	timed "link smb: imgcopy -conns 1" "" "$DENSE" -- $in $IMG -yes -no-gpt-fixup -conns 1 -cred "$r/cred" "smb://10.203.0.1:4445/images/net.img.zst" "$dst"
	timed "link smb: smbclient get | zstd -d | dd" "" "$DENSE" -- $in sh -c "smbclient -q -p 4445 -A '$r/smbauth' //10.203.0.1/images -c 'get net.img.zst -' | zstd -q -d | $dd"
	NET_REMOTE=1
}

net_ratios() {
	[[ ${NET_DONE:-} ]] || return 0
	echo "  http lo:   imgcopy / (curl | zstd -d | dd oflag=direct)   $(ratio "$T_http_lo__curl___zstd__d___dd_oflag_direct" "$T_http_lo__imgcopy")   (goal >= 1.0)"
	[[ $NET_DONE == link ]] || return 0
	echo "  link, ${NET_DELAY:-10ms} each way${NET_RATE:+, $NET_RATE Mbit/s} (TCP connect took ${NET_RTT}s; zstd image $((NET_ZST / MiB)) MiB):"
	echo "    imgcopy 4 conns / (curl | zstd -d | dd oflag=direct) $(ratio "$T_link__curl___zstd__d___dd_oflag_direct" "$T_link__imgcopy__4_connections_")   (goal >= 2.0)"
	echo "    imgcopy 4 conns / curl -o /dev/null (one stream)     $(ratio "$T_link__curl__o__dev_null__download_only_" "$T_link__imgcopy__4_connections_")   (the restore against a single stream's download alone)"
	echo "    imgcopy 4 conns / imgcopy -http-conns 1              $(ratio "$T_link__imgcopy__http_conns_1" "$T_link__imgcopy__4_connections_")"
	if [[ ${NET_REMOTE:-} ]]; then
		echo "    s3:  imgcopy 4 conns / (curl --aws-sigv4 | zstd -d | dd) $(ratio "$T_link_s3__curl___aws_sigv4___zstd__d___dd" "$T_link_s3__imgcopy__4_connections_")   (goal >= 2.0)"
		echo "    smb: imgcopy 4 sessions / (smbclient get | zstd -d | dd) $(ratio "$T_link_smb__smbclient_get___zstd__d___dd" "$T_link_smb__imgcopy__4_sessions_")   (goal >= 2.0)"
		echo "    smb: imgcopy 4 sessions / imgcopy -conns 1               $(ratio "$T_link_smb__imgcopy__conns_1" "$T_link_smb__imgcopy__4_sessions_")"
	fi
	echo "    the link (tundelay, real-time priority: $NET_TD_RT) over all runs:"
	echo "$NET_TD_STATS"
}
