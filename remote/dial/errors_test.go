package dial_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/remotetest"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/remote/dial"
)

// check asserts err is of kind want (nil: any), one line, containing text.
func check(t *testing.T, what string, err error, want error, text string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error", what)
		return
	}
	t.Logf("%s: %v", what, err)
	if want != nil && !errors.Is(err, want) {
		t.Errorf("%s: %v, want %v", what, err, want)
	}
	if !strings.Contains(err.Error(), text) {
		t.Errorf("%s: message lacks %q", what, text)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("%s: not one line", what)
	}
}

// TestServerGone: the server vanishes mid-transfer; the read ends with a
// clear error after the bounded retries, never a hang.
func TestServerGone(t *testing.T) {
	for _, st := range starters {
		t.Run(st.Name, func(t *testing.T) {
			s := st.Start(t)
			log := &logBuf{}
			o := opts(s, log)
			ctx := context.Background()
			if err := upload(t, ctx, s.URL("gone.img", 0), randBytes(t, 8<<20), false, o); err != nil {
				t.Fatal(err)
			}
			proxy := remotetest.NewCut(t, fmt.Sprintf("127.0.0.1:%d", s.Port), 1<<40)
			r, err := dial.Open(ctx, s.URL("gone.img", proxy.Port), o)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, 1<<20)
			if _, err := io.ReadFull(r, buf); err != nil {
				t.Fatal(err)
			}
			proxy.Kill()
			start := time.Now()
			_, err = io.Copy(io.Discard, r)
			check(t, "server gone", err, remote.ErrUnreachable, "server gone at byte")
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			noSecrets(t, s, log.String(), fmt.Sprint(err))
		})
	}
}

// TestSFTPHostKey: an unknown key and a changed key are refused.
func TestSFTPHostKey(t *testing.T) {
	s := remotetest.StartSSHD(t)
	ctx := context.Background()
	url := fmt.Sprintf("sftp://nobody@127.0.0.1:%d/etc/hostname", s.Port)
	o := func(c cred.Cred) *remote.Options {
		return &remote.Options{Cred: &c, Retries: 1, ConnectTimeout: 3 * time.Second}
	}
	t.Setenv("HOME", t.TempDir()) // no ~/.ssh/known_hosts
	_, err := dial.Open(ctx, url, o(cred.Cred{SSHKey: s.KeyFile}))
	check(t, "unknown key", err, remote.ErrHostKey, "?hostkey="+s.HostKeyFP)

	_, err = dial.Open(ctx, url+"?hostkey=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", o(cred.Cred{SSHKey: s.KeyFile}))
	check(t, "wrong fingerprint", err, remote.ErrHostKey, "expected SHA256:AAAA")

	// known_hosts lists another key for the host.
	other := remotetest.StartSSHD(t)
	kh, _ := os.ReadFile(other.KnownHosts)
	bad := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(bad, []byte(strings.Replace(string(kh), fmt.Sprint(other.Port), fmt.Sprint(s.Port), 1)), 0o644)
	_, err = dial.Open(ctx, url, o(cred.Cred{SSHKey: s.KeyFile, KnownHosts: bad}))
	check(t, "changed key", err, remote.ErrHostKey, "HOST KEY MISMATCH")

	// The right fingerprint works.
	r, err := dial.Open(ctx, url+"?hostkey="+s.HostKeyFP, o(cred.Cred{SSHKey: s.KeyFile}))
	if err != nil {
		t.Fatalf("right fingerprint: %v", err)
	}
	r.Close()
}

// TestSFTPPermissionAndFull: permission denied and disk full on the share.
func TestSFTPPermissionAndFull(t *testing.T) {
	s := remotetest.StartSSHD(t)
	ctx := context.Background()
	o := &remote.Options{Cred: &cred.Cred{SSHKey: s.KeyFile, KnownHosts: s.KnownHosts}, Retries: 1, ConnectTimeout: 3 * time.Second}
	rootDir := remotetest.OpenDir(t) // owned by root, 0755: nobody cannot write
	os.WriteFile(filepath.Join(rootDir, "private.img"), []byte("secret data"), 0o600)
	base := fmt.Sprintf("sftp://nobody@127.0.0.1:%d", s.Port)
	_, err := dial.Create(ctx, base+rootDir+"/new.img", false, o)
	check(t, "write into a root-owned directory", err, remote.ErrPermission, "permission denied")
	_, err = dial.Open(ctx, base+rootDir+"/private.img", o)
	check(t, "read a root-only file", err, remote.ErrPermission, "permission denied")

	tiny := filepath.Join(remotetest.OpenDir(t), "tiny")
	remotetest.Tmpfs(t, tiny, 2<<20, "nobody")
	err = upload(t, ctx, base+tiny+"/big.img", randBytes(t, 4<<20), false, o)
	check(t, "disk full", err, remote.ErrNoSpace, "no space")
	if ents, _ := os.ReadDir(tiny); len(ents) != 0 {
		t.Errorf("left on the full share: %v", ents)
	}
}

// TestSMBShares: the encrypted share, a read-only share, a full share,
// and an SMB1-only server.
func TestSMBShares(t *testing.T) {
	s := remotetest.StartSamba(t, 2<<20)
	ctx := context.Background()
	c, _ := cred.Parse(strings.NewReader("user=nobody\npassword=" + s.Password))
	o := &remote.Options{Cred: c, Retries: 1, ConnectTimeout: 3 * time.Second}
	base := fmt.Sprintf("smb://127.0.0.1:%d", s.Port)
	data := randBytes(t, 3<<20)
	if err := upload(t, ctx, base+"/secret/enc.img", data, false, o); err != nil {
		t.Fatalf("encrypted share: %v", err)
	}
	r, err := dial.Open(ctx, base+"/secret/enc.img", o)
	if err != nil {
		t.Fatal(err)
	}
	back, _ := io.ReadAll(r)
	r.Close()
	if string(back) != string(data) {
		t.Errorf("encrypted share: read back differs")
	}
	err = upload(t, ctx, base+"/ro/x.img", data, false, o)
	check(t, "read-only share", err, remote.ErrPermission, "")
	err = upload(t, ctx, base+"/tiny/big.img", data, false, o)
	check(t, "disk full", err, remote.ErrNoSpace, "no space")
	if ents, _ := os.ReadDir(s.Tiny); len(ents) != 0 {
		t.Errorf("left on the full share: %v", ents)
	}
	for _, x := range []string{fmt.Sprint(err)} {
		if strings.Contains(x, s.Password) {
			t.Errorf("password in %q", x)
		}
	}

	old := remotetest.StartSamba(t, 0, "server min protocol = NT1", "server max protocol = NT1")
	_, err = dial.Open(ctx, fmt.Sprintf("smb://127.0.0.1:%d/images/x.img", old.Port), o)
	check(t, "SMB1-only server", err, nil, "SMB1")
}
