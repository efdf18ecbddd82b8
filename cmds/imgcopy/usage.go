package main

// usage is the text of imgcopy -h, before the flags.
const usage = `Usage: imgcopy [flags] SRC DST
       imgcopy -make-bmap [flags] IMAGE [BMAP]

Restore a disk image onto a disk, or back a disk up into an image.

SRC  an image file, a block device, - (stdin), an http:// / https:// URL
     (a dropped connection is resumed with a Range request; no answer in
     -connect-timeout or under 64 KiB in -idle-timeout counts as dropped;
     -retries bounds the attempts), or a share:
       smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH    SMB 2/3
       nfs://HOST[:PORT]/EXPORT/PATH                 NFS v4/v3 (kernel client)
       sftp://USER@HOST[:PORT]/PATH[?hostkey=SHA256:...]   (also ssh://)
       s3://BUCKET/KEY?endpoint=https://HOST&region=R[&style=path|virtual]
     (resumed from the byte reached after a dropped connection). gzip, zstd
     and xz images are decompressed on the fly (recognised by their magic bytes).
DST  a block device or a file. A new or empty file is created with holes
     where the image has zeros; an existing file or a disk keeps its size.
     A backup (-compress) may also go to a share URL as above.

Restoring refuses a DST that is mounted (or has a mounted partition), held
by another program (gptfix, imgcopy: O_EXCL and flock), read-only, holds
the running system, is the source (also through a loop device), or is
smaller than the image's last partition; and, unless -yes, one that holds
a partition table (a disk or an image file), a filesystem, LVM, md, VMFS,
swap or ISO signature, or is a partition rather than a whole disk (what is
on it is printed first; writing into a partition is warned about loudly).
Before writing, the target's partition table is saved to an undo file
(next to -undo, *.before-restore.json) and invalidated; the image's
partition tables are written last, only when the whole image arrived and
matched -sha256. A failed or killed restore so leaves a disk that no tool
takes for a good one: restart the restore, or gptfix -undo FILE -yes DST.
With -delta (a disk that already holds an older copy of the image) the
target is read alongside the image and only the 64 KiB blocks that differ
are written (zeros only where the target is not zero); the checks and the
order of writes stay the same.
A new file DST is written as DST.partial and renamed when complete. On a larger (or smaller) disk the backup GPT is moved
to the disk's end, keeping every partition entry in its slot.

Block maps: a restore uses the image's block map (bmaptool's .bmap format;
-bmap FILE|URL, or found next to a local image as IMAGE.bmap, the name
without .zst/.gz/.xz plus .bmap, ...). It then reads only the mapped ranges
of a sparse image file, checks each range's checksum and that everything
else is zero. Without -sha256 it reports the SHA-256 the map claims
(imgcopy's maps record it) instead of hashing gigabytes of zeros; -sha256
is always checked against a hash of the bytes restored, never against
the (unkeyed) map. A map that does not fit the image stops the restore
like a wrong -sha256. -no-bmap ignores maps.
-make-bmap writes an image's map (default IMAGE.bmap); bmaptool can use it.

Signed images (minisign format; the stock minisign tool makes keys and
checks signatures: minisign -G -W -p esxi.pub -s esxi.key): a backup with
-sign KEY writes DST.sha256.minisig and DST.bmap.minisig. A restore with
-pubkey PUB first checks the signature of the image's manifest (SRC.sha256,
or -manifest) and of the block map it uses; a missing or wrong signature, or
a signature by another key, stops it before anything is written and names
the file. The signed manifest's SHA-256 must then match the restored bytes.

Backing up (-compress zstd|gzip|none) writes DST plus DST.gpt.json (GPT
layout), DST.sha256 (sha256sum manifest: the file's hash, checked by
sha256sum -c in its directory, and in a comment line the hash of the
uncompressed image, for -sha256) and DST.bmap (block map of the
uncompressed image), all under temporary names renamed into place at the
end: a failed or killed backup leaves an older backup set as it was.
On a share (smb://, nfs://, sftp://, s3://) the temporary names are
.NAME.partial beside each file (S3: multipart uploads, completed only at
the end, aborted on failure); a killed backup leaves only hidden .partial
files. An existing image is refused without -yes.

Credentials for shares never go on the command line: -cred FILE names a
file of key=value lines: user=, password=, domain= (SMB), ssh_key=PATH and
known_hosts=PATH (SFTP; the server's host key must be in a known_hosts file
or given as ?hostkey=), s3_access_key=, s3_secret_key= (S3; else the AWS_*
variables and ~/.aws/credentials). Passwords are never printed.

Exit status: 0 done, 1 checksum, signature or verification mismatch, 2 other trouble.

Examples:
  imgcopy -sha256 3a7b... http://10.0.0.1/esxi.img.zst /dev/sda
  imgcopy -verify esxi.img /dev/sdb
  imgcopy -delta -yes esxi.img.zst /dev/sdb  # writes only what changed since the last restore
  imgcopy -compress zstd /dev/sda /mnt/backup/esxi.img.zst
  imgcopy -make-bmap esxi.img            # writes esxi.img.bmap
  imgcopy -cred /mnt/nas.cred smb://nas/images/esxi.img.zst /dev/sda
  imgcopy -compress zstd /dev/sda s3://backups/esxi.img.zst?endpoint=https://minio:9000
  imgcopy -compress zstd -cred ssh.cred /dev/sda sftp://backup@nas/srv/images/esxi.img.zst
  imgcopy -compress zstd -sign esxi.key /dev/sda esxi.img.zst
  imgcopy -pubkey esxi.pub http://10.0.0.1/esxi.img.zst /dev/sda

Flags:
`
