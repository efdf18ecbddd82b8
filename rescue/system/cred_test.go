package system

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/internal/remotetest"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/console"
)

// TestShareReference: rescue.cred= read from a file, the image's GPT read
// from an SMB share (rescue.ref=image) and a layout file from the share
// (rescue.ref=smb://...); the console never shows the password.
func TestShareReference(t *testing.T) {
	s := remotetest.StartSMBShare(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "esxi.img")
	if err := esxi.Create(img, esxi.CreateOptions{Version: "6.7", Size: 2 * gib, SectorSize: 512, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	tool(t, "sh", "-c", `head -c 1048576 "$1" | zstd -q -c > "$2"`, "sh", img, s.Local("esxi.img.zst"))
	credFile := filepath.Join(dir, "nas.cred")
	os.WriteFile(credFile, []byte("user=nobody\npassword="+s.Cred.Password+"\n"), 0o600)

	var out bytes.Buffer
	sys := New(console.New(&out))
	sys.TmpDir = t.TempDir()
	c, err := cmdline.Parse(cmdline.Split("rescue.action=fix,verify rescue.target=auto rescue.ref=image rescue.image="+s.URL("esxi.img.zst", 0)+" rescue.cred="+credFile, "test", false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sys.Reference(context.Background(), c); err != nil {
		t.Fatalf("Reference: %v\n%s", err, out.String())
	}
	if sys.imageTab == nil || sys.imageTab.SectorSize != 512 || len(sys.imageTab.Slots()) == 0 {
		t.Fatalf("no table read from the share: %+v", sys.imageTab)
	}
	if !strings.Contains(out.String(), "credentials: user=nobody password=***") {
		t.Errorf("console:\n%s", out.String())
	}
	s.NoSecrets(t, out.String())

	// A wrong password: a clear error, still no secret.
	os.WriteFile(credFile, []byte("user=nobody\npassword=Wrong-Password-123\n"), 0o600)
	sys2 := New(console.New(&out))
	_, err = sys2.Reference(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "authentication failed") || strings.Contains(err.Error(), "Wrong-Password-123") {
		t.Errorf("wrong password: %v", err)
	}
	if strings.Contains(out.String(), "Wrong-Password-123") {
		t.Errorf("the wrong password is on the console:\n%s", out.String())
	}
}
