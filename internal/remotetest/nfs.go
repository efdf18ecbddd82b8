package remotetest

import (
	"context"
	"net"
	"path"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	nfshelper "github.com/willscott/go-nfs/helpers"
)

// NFSExport is the export StartNFS serves dir under; a directory below it
// (/export/SUB) mounts that subdirectory when it exists.
const NFSExport = "/export"

// NFSDenied is an export StartNFS refuses to this client (MOUNT3 answers
// MNT3ERR_ACCES, what a server answers a host its exports(5) leaves out).
const NFSDenied = "/denied"

// StartNFS serves dir over NFSv3 (github.com/willscott/go-nfs: MOUNT and
// NFS on one TCP port, no portmapper, AUTH_NULL) on a loopback port, for
// the kernel client of a QEMU guest (mount options port=P,mountport=P).
// Like a real server's exports(5): NFSExport (and its existing
// subdirectories) mounts dir, NFSDenied is refused with MNT3ERR_ACCES,
// any other path with MNT3ERR_NOENT. The host kernel here has no NFS
// client, so only QEMU tests use it.
func StartNFS(t testing.TB, dir string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h := nfshelper.NewCachingHandler(&exportsHandler{Handler: nfshelper.NewNullAuthHandler(osfs.New(dir)), fs: osfs.New(dir)}, 1024)
	go nfs.Serve(l, h)
	return l.Addr().(*net.TCPAddr).Port
}

// exportsHandler answers MOUNT requests by path (see StartNFS).
type exportsHandler struct {
	nfs.Handler
	fs billy.Filesystem
}

// Mount implements nfs.Handler. go-nfs asks the caching handler for a
// root handle even when the status is an error, so every answer carries
// a file system.
func (h *exportsHandler) Mount(ctx context.Context, conn net.Conn, req nfs.MountRequest) (nfs.MountStatus, billy.Filesystem, []nfs.AuthFlavor) {
	p := path.Clean("/" + string(req.Dirpath))
	switch {
	case p == NFSDenied || strings.HasPrefix(p, NFSDenied+"/"):
		return nfs.MountStatusErrAcces, h.fs, nil
	case p == NFSExport:
		return h.Handler.Mount(ctx, conn, req)
	case strings.HasPrefix(p, NFSExport+"/"):
		sub := strings.TrimPrefix(p, NFSExport+"/")
		fi, err := h.fs.Stat(sub)
		if err != nil || !fi.IsDir() {
			return nfs.MountStatusErrNoEnt, h.fs, nil
		}
		c, err := h.fs.Chroot(sub)
		if err != nil {
			return nfs.MountStatusErrServerFault, h.fs, nil
		}
		return nfs.MountStatusOk, c, []nfs.AuthFlavor{nfs.AuthFlavorNull}
	}
	return nfs.MountStatusErrNoEnt, h.fs, nil
}
