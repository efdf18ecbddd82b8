package nfs

import (
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/remote"
)

// TestMountOptions: the mount(2) arguments for v3 and v4 (the host kernel
// of CI has no NFS client; TestRestoreShare/nfs mounts for real in QEMU).
func TestMountOptions(t *testing.T) {
	for _, c := range []struct {
		url, vers, ip string
		fstype, src   string
		want, notWant []string
		versions      []string
	}{
		{"nfs://filer/vol/images/esxi.img", "4.2", "10.0.0.5", "nfs4", "10.0.0.5:/vol/images",
			[]string{"vers=4.2", "addr=10.0.0.5", "soft", "timeo=100", "proto=tcp", "clientaddr="}, []string{"nolock", "port="},
			[]string{"4.2", "4.1", "4.0", "3"}},
		{"nfs://filer:2050/export/x.img?vers=3&mountport=2050", "3", "10.0.0.5", "nfs", "10.0.0.5:/export",
			[]string{"vers=3", "nolock", "noacl", "mountproto=tcp", "mountaddr=10.0.0.5", "port=2050", "mountport=2050"}, []string{"clientaddr"},
			[]string{"3"}},
		{"nfs://[fd00::1]/e/x.img?vers=4.1", "4.1", "fd00::1", "nfs4", "[fd00::1]:/e",
			[]string{"addr=fd00::1"}, nil, []string{"4.1"}},
	} {
		u, err := remote.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		o := &remote.Options{ConnectTimeout: 10 * time.Second}
		o.Defaults()
		b, err := New(u, o)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(b.versions, ",") != strings.Join(c.versions, ",") {
			t.Errorf("%s: versions %v", c.url, b.versions)
		}
		fstype, src, data := b.MountOptions(c.vers, c.ip)
		if fstype != c.fstype || src != c.src {
			t.Errorf("%s: %s %s", c.url, fstype, src)
		}
		opts := "," + data + ","
		for _, w := range c.want {
			if !strings.Contains(opts, ","+w) {
				t.Errorf("%s: %q lacks %s", c.url, data, w)
			}
		}
		for _, w := range c.notWant {
			if strings.Contains(opts, ","+w) {
				t.Errorf("%s: %q has %s", c.url, data, w)
			}
		}
	}
	for _, bad := range []string{"nfs://filer/x.img", "nfs://filer/e/x.img?vers=2"} {
		u, err := remote.Parse(bad)
		if err != nil {
			continue
		}
		o := &remote.Options{}
		o.Defaults()
		if _, err := New(u, o); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
