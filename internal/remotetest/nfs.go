package remotetest

import (
	"net"
	"testing"

	"github.com/go-git/go-billy/v5/osfs"
	nfs "github.com/willscott/go-nfs"
	nfshelper "github.com/willscott/go-nfs/helpers"
)

// StartNFS serves dir over NFSv3 (github.com/willscott/go-nfs: MOUNT and
// NFS on one TCP port, no portmapper, AUTH_NULL) on a loopback port, for
// the kernel client of a QEMU guest (mount options port=P,mountport=P).
// Any export path mounts dir. The host kernel here has no NFS client, so
// only QEMU tests use it.
func StartNFS(t testing.TB, dir string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	h := nfshelper.NewCachingHandler(nfshelper.NewNullAuthHandler(osfs.New(dir)), 1024)
	go nfs.Serve(l, h)
	return l.Addr().(*net.TCPAddr).Port
}
