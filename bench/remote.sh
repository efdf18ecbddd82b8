# bench/remote.sh — section 6 of bench/run.sh (sourced by it): restores over
# SMB, SFTP and S3 on loopback against the matching stock client in the same
# run, and imgcopy -conns 1 (one stream) beside imgcopy's default 4 ranges
# (S3: ranged GETs over 4 connections; SMB: 4 sessions). The same
# over a 20 ms link is in bench/net.sh. versitygw runs with --keep-alive,
# as S3 services keep their connections. Servers: smbd, sshd and versitygw with their own configurations under
# $DIR, bound to 127.0.0.1 only, stopped at the end. NFS needs a kernel NFS
# client and server; where the kernel has none (containers, microVMs) the row
# is skipped with that reason.

# bench_smb_conf ROOT PORT SHARE READONLY [GLOBAL...] writes ROOT/smb.conf:
# a standalone smbd on PORT whose state lives under ROOT, sharing SHARE as
# [images] to the user nobody (read only = READONLY), with the extra
# [global] lines GLOBAL (remote.sh's loopback server and net.sh's server in
# its namespace share it).
bench_smb_conf() {
	local r=$1 port=$2 share=$3 ro=$4 g
	shift 4
	{
		echo "[global]"
		echo "smb ports = $port"
		for g in "$@"; do echo "$g"; done
		cat <<-CONF
		disable netbios = yes
		server role = standalone server
		passdb backend = tdbsam:$r/private/passdb.tdb
		private dir = $r/private
		state directory = $r/state
		lock directory = $r/lock
		cache directory = $r/cache
		pid directory = $r/pid
		ncalrpc dir = $r/ncalrpc
		log file = $r/log.smbd
		load printers = no
		printcap name = /dev/null
		disable spoolss = yes
		server min protocol = SMB2_02
		[images]
		path = $share
		read only = $ro
		valid users = nobody
		CONF
	} >"$r/smb.conf"
}

remote_servers() { # starts the three servers, sets SMB_PORT SSH_PORT S3_PORT
	local r=$DIR/remote
	mkdir -p "$r"/{images,private,state,lock,cache,pid,ncalrpc,s3/images}
	chmod 755 "$DIR" "$r" "$r/images"
	chown nobody "$r/images"
	free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
	SMB_PORT=$(free_port) SSH_PORT=$(free_port) S3_PORT=$(free_port)
	REMOTE_PIDS=()
	bench_smb_conf "$r" "$SMB_PORT" "$r/images" no "interfaces = 127.0.0.1" "bind interfaces only = yes"
	printf 'bench-Pa55\nbench-Pa55\n' | pdbedit -s "$r/smb.conf" -a -u nobody -t >/dev/null
	# its own session: smbd stopping signals its whole process group, which
	# would otherwise be this script's (and end it before the summary).
	setsid smbd --foreground --no-process-group -s "$r/smb.conf" >"$r/smbd.out" 2>&1 &
	REMOTE_PIDS+=($!)
	ssh-keygen -q -t ed25519 -N "" -f "$r/hostkey"
	ssh-keygen -q -t ed25519 -N "" -f "$r/client"
	cp "$r/client.pub" "$r/authorized_keys"
	chmod 644 "$r/authorized_keys"
	mkdir -p /run/sshd
	cat >"$r/sshd_config" <<-CONF
	Port $SSH_PORT
	ListenAddress 127.0.0.1
	HostKey $r/hostkey
	PidFile none
	AuthorizedKeysFile $r/authorized_keys
	StrictModes no
	PasswordAuthentication no
	KbdInteractiveAuthentication no
	AllowUsers nobody
	UsePAM no
	Subsystem sftp internal-sftp
	ForceCommand internal-sftp
	CONF
	"$(command -v sshd || echo /usr/sbin/sshd)" -D -e -f "$r/sshd_config" >"$r/sshd.out" 2>&1 &
	REMOTE_PIDS+=($!)
	echo "[127.0.0.1]:$SSH_PORT $(cat "$r/hostkey.pub")" >"$r/known_hosts"
	"$VERSITYGW" --access bench --secret bench-S3cret-key --port "127.0.0.1:$S3_PORT" --keep-alive --quiet posix "$r/s3" >"$r/vgw.out" 2>&1 &
	REMOTE_PIDS+=($!)
	printf 'user=nobody\npassword=bench-Pa55\nssh_key=%s\nknown_hosts=%s\ns3_access_key=bench\ns3_secret_key=bench-S3cret-key\n' \
		"$r/client" "$r/known_hosts" >"$r/cred"
	printf 'username=nobody\npassword=bench-Pa55\n' >"$r/smbauth"
	local p
	for p in $SMB_PORT $SSH_PORT $S3_PORT; do
		for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
	done
}

remote_stop() {
	local p
	for p in "${REMOTE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait "${REMOTE_PIDS[@]}" 2>/dev/null || true
}

remote_section() {
	local r=$DIR/remote
	VERSITYGW=$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")
	for t in smbd pdbedit smbclient sshd sftp ssh-keygen curl python3 "$VERSITYGW"; do
		command -v "$t" >/dev/null || [[ -x $t ]] || {
			log "6. skipped: $t is missing (build.sh deps installs samba, smbclient, openssh-server, curl, versitygw)"
			return 0
		}
	done
	log "6. dense $((DENSE / MiB)) MiB image restored over SMB, SFTP and S3 on loopback, vs the stock clients"
	remote_servers
	trap 'remote_stop; [[ -n ${LOOP:-} ]] && losetup -d "$LOOP" 2>/dev/null; [[ ${KEEP:-} ]] || rm -rf "$DIR"' EXIT
	cp "$DIR/dense.img" "$r/images/dense.img"
	chmod 644 "$r/images/dense.img"
	cp "$DIR/dense.img" "$r/s3/images/dense.img"
	local S3URL="http://127.0.0.1:$S3_PORT/images/dense.img"
	timed "smb: imgcopy" "$DIR/out" "$DENSE" -- $IMG -cred "$r/cred" "smb://127.0.0.1:$SMB_PORT/images/dense.img" "$DIR/out"
	timed "smb: imgcopy -conns 1" "$DIR/out" "$DENSE" -- $IMG -conns 1 -cred "$r/cred" "smb://127.0.0.1:$SMB_PORT/images/dense.img" "$DIR/out"
	timed "smb: smbclient -c get + sync" "$DIR/out" "$DENSE" -- sh -c "smbclient -q -p $SMB_PORT -A '$r/smbauth' //127.0.0.1/images -c 'get dense.img $DIR/out' >/dev/null && sync '$DIR/out'"
	timed "sftp: imgcopy" "$DIR/out" "$DENSE" -- $IMG -cred "$r/cred" "sftp://nobody@127.0.0.1:$SSH_PORT$r/images/dense.img" "$DIR/out"
	timed "sftp: sftp get + sync" "$DIR/out" "$DENSE" -- sh -c "sftp -q -i '$r/client' -P $SSH_PORT -o UserKnownHostsFile='$r/known_hosts' -o BatchMode=yes 'nobody@127.0.0.1:$r/images/dense.img' '$DIR/out' >/dev/null && sync '$DIR/out'"
	timed "s3: imgcopy" "$DIR/out" "$DENSE" -- $IMG -cred "$r/cred" "s3://images/dense.img?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1" "$DIR/out"
	timed "s3: imgcopy -conns 1" "$DIR/out" "$DENSE" -- $IMG -conns 1 -cred "$r/cred" "s3://images/dense.img?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1" "$DIR/out"
	timed "s3: curl --aws-sigv4 + sync" "$DIR/out" "$DENSE" -- sh -c "curl -sf -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --aws-sigv4 aws:amz:us-east-1:s3 --user bench:bench-S3cret-key -o '$DIR/out' '$S3URL' && sync '$DIR/out'"
	run_queued
	cmp "$DIR/dense.img" "$DIR/out" || { echo "bench: the S3 restore differs from the image" >&2; exit 1; }
	remote_stop
	if grep -qw nfs4 /proc/filesystems 2>/dev/null || modprobe -q nfsv4 2>/dev/null; then
		NFS_NOTE="NFS: kernel client present; an NFS server export is not set up by this script"
	else
		NFS_NOTE="NFS: skipped, this kernel ($(uname -r)) has no NFS client (imgcopy uses the kernel's)"
	fi
	log "  $NFS_NOTE"
	REMOTE_DONE=1
}

remote_ratios() {
	[[ ${REMOTE_DONE:-} ]] || return 0
	echo "  smb:    imgcopy / smbclient get     $(ratio "$T_smb__smbclient__c_get___sync" "$T_smb__imgcopy")   (goal >= 0.9)"
	echo "  smb:    imgcopy / imgcopy -conns 1  $(ratio "$T_smb__imgcopy__conns_1" "$T_smb__imgcopy")   (4 sessions vs one)"
	echo "  sftp:   imgcopy / sftp get          $(ratio "$T_sftp__sftp_get___sync" "$T_sftp__imgcopy")   (goal >= 0.9)"
	echo "  s3:     imgcopy / curl sigv4 GET    $(ratio "$T_s3__curl___aws_sigv4___sync" "$T_s3__imgcopy")   (goal >= 0.9)"
	echo "  s3:     imgcopy / imgcopy -conns 1  $(ratio "$T_s3__imgcopy__conns_1" "$T_s3__imgcopy")   (4 ranged GETs at once vs one stream)"
	echo "  $NFS_NOTE"
}
