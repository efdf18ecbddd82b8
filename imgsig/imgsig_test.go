package imgsig

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// cliKeys makes a key pair with the stock minisign tool; with a password
// the secret key is encrypted (minisign's default).
func cliKeys(t *testing.T, dir, name, password string) (pub, sec string) {
	t.Helper()
	if _, err := exec.LookPath("minisign"); err != nil {
		t.Fatalf("the stock minisign tool is needed (Debian package minisign; ./build.sh deps installs it): %v", err)
	}
	pub, sec = filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
	args := []string{"-G", "-p", pub, "-s", sec}
	cmd := exec.Command("minisign", args...)
	if password == "" {
		cmd.Args = append(cmd.Args, "-W")
	} else {
		cmd.Stdin = strings.NewReader(password + "\n" + password + "\n")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("minisign -G: %v\n%s", err, out)
	}
	return pub, sec
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const manifest = "1111111111111111111111111111111111111111111111111111111111111111  esxi.img.zst\n" +
	"2222222222222222222222222222222222222222222222222222222222222222  esxi.img\n"

// TestOursVerifiedByMinisign: signatures Sign writes (with keys the stock
// tool made, encrypted or not) pass `minisign -V`, and fail it once the
// file changes. (An encrypted key costs two scrypt runs of ~10 s.)
func TestOursVerifiedByMinisign(t *testing.T) {
	for _, pw := range []string{"", "correct horse"} {
		dir := t.TempDir()
		pub, sec := cliKeys(t, dir, "k", pw)
		pwFile := ""
		if pw != "" {
			pwFile = filepath.Join(dir, "pw")
			writeFile(t, pwFile, pw+"\n")
			if _, err := LoadPrivateKey(sec, ""); err == nil || !strings.Contains(err.Error(), "encrypted") {
				t.Fatalf("an encrypted key without a password: %v", err)
			}
		}
		k, err := LoadPrivateKey(sec, pwFile)
		if err != nil {
			t.Fatal(err)
		}
		m := filepath.Join(dir, "esxi.img.zst.sha256")
		writeFile(t, m, manifest)
		sig, err := SignFile(k, m)
		if err != nil {
			t.Fatal(err)
		}
		if sig != m+".minisig" {
			t.Errorf("signature at %s", sig)
		}
		out, err := exec.Command("minisign", "-V", "-p", pub, "-m", m).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Signature and comment signature verified") {
			t.Fatalf("minisign -V of our signature (password %v): %v\n%s", pw != "", err, out)
		}
		if !strings.Contains(string(out), "file:esxi.img.zst.sha256") {
			t.Errorf("trusted comment does not name the file:\n%s", out)
		}
		// -H: minisign insists on the pre-hashed format, which we write.
		if out, err := exec.Command("minisign", "-V", "-H", "-p", pub, "-m", m).CombinedOutput(); err != nil {
			t.Errorf("minisign -V -H: %v\n%s", err, out)
		}
		writeFile(t, m, strings.Replace(manifest, "2222", "3222", 1))
		if out, err := exec.Command("minisign", "-V", "-p", pub, "-m", m).CombinedOutput(); err == nil {
			t.Fatalf("minisign -V accepted a changed manifest:\n%s", out)
		}
	}
}

// TestVerify: signatures made by the stock tool (current and legacy
// format) checked by Verify, with each failure's kind and message.
func TestVerify(t *testing.T) {
	dir := t.TempDir()
	pub, sec := cliKeys(t, dir, "good", "")
	otherPub, otherSec := cliKeys(t, dir, "other", "")
	key, err := LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadPublicKey(otherPub)
	if err != nil {
		t.Fatal(err)
	}
	// The base64 form (minisign -P) is accepted as well.
	line := strings.Split(strings.TrimSpace(readFile(t, pub)), "\n")[1]
	if k2, err := LoadPublicKey(line); err != nil || k2.ID() != key.ID() {
		t.Fatalf("LoadPublicKey(base64): %v %v", k2, err)
	}
	m := filepath.Join(dir, "esxi.img.sha256")
	writeFile(t, m, manifest)
	cliSign := func(seckey string, legacy bool) []byte {
		t.Helper()
		args := []string{"-S", "-s", seckey, "-m", m, "-x", m + ".minisig"}
		if legacy {
			args = append(args, "-l")
		}
		if out, err := exec.Command("minisign", args...).CombinedOutput(); err != nil {
			t.Fatalf("minisign -S: %v\n%s", err, out)
		}
		return []byte(readFile(t, m+".minisig"))
	}
	good := cliSign(sec, false)
	legacy := cliSign(sec, true)
	wrong := cliSign(otherSec, false)
	data := []byte(manifest)
	tampered := []byte(strings.Replace(manifest, "2222", "2223", 1))
	garbage := []byte("untrusted comment: x\nnot base64\ntrusted comment: y\nzzz\n")
	for _, tc := range []struct {
		name string
		key  PublicKey
		data []byte
		sig  []byte
		kind error
		msg  string
	}{
		{"good", key, data, good, nil, ""},
		{"legacy format", key, data, legacy, nil, ""},
		{"missing", key, data, nil, ErrMissing, "esxi.img.sha256 is not signed: no signature esxi.img.sha256.minisig"},
		{"wrong key", key, data, wrong, ErrWrongKey, "was signed by key " + other.ID() + ", not by the trusted key " + key.ID()},
		{"other key trusted", other, data, good, ErrWrongKey, "not by the trusted key " + other.ID()},
		{"tampered manifest", key, tampered, good, ErrBad, "esxi.img.sha256 does not match its signature esxi.img.sha256.minisig"},
		{"garbage signature", key, data, garbage, ErrBad, "esxi.img.sha256.minisig: not a minisign signature"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.key, "esxi.img.sha256", tc.data, "esxi.img.sha256.minisig", tc.sig)
			if tc.kind == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.Is(err, tc.kind) || !errors.As(err, &e) || e.File != "esxi.img.sha256" {
				t.Fatalf("got %v, want %v", err, tc.kind)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", err, tc.msg)
			}
		})
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLoadPublicKeyErrors(t *testing.T) {
	for _, in := range []string{"", "RWQ", "/nonexistent/key.pub", "untrusted comment: x\nAAAA"} {
		if _, err := LoadPublicKey(in); err == nil {
			t.Errorf("LoadPublicKey(%q) accepted", in)
		}
	}
}

func TestManifest(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, text, raw, wantName, err string
	}{
		{"imgcopy backup", manifest, "esxi.img", "esxi.img", ""},
		{"by the only raw entry", manifest, "", "esxi.img", ""},
		{"sha256sum binary mode", h + " *disk.img\r\n", "x.img", "disk.img", ""},
		{"only compressed", h + "  a.img.zst\n", "a.img", "", "only compressed files"},
		{"two raw", h + "  a.img\n" + h + "  b.img\n", "c.img", "", "several uncompressed"},
		{"no lines", "# nothing\n\n", "", "", "no SHA-256 lines"},
		{"bad hex", "xyz  a.img\n", "", "", "line 1"},
		{"one space", h + " a.img\n", "", "", "line 1"},
		{"conflict", h + "  a.img\n" + strings.Repeat("cd", 32) + "  a.img\n", "", "", "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tc.text))
			var name string
			if err == nil {
				name, _, err = m.RawSHA256(tc.raw)
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil || name != tc.wantName {
				t.Fatalf("got %q %v, want %q", name, err, tc.wantName)
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(manifest))
	f.Add([]byte(strings.Repeat("ab", 32) + " *x\r\n# c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if len(m.Names) != len(m.Sums) || len(m.Names) == 0 {
			t.Fatalf("names %v sums %d", m.Names, len(m.Sums))
		}
		for _, n := range m.Names {
			if len(m.Sums[n]) != 32 || n == "" || bytes.ContainsAny([]byte(n), "\n") {
				t.Fatalf("entry %q", n)
			}
		}
		m.RawSHA256("x")
	})
}
