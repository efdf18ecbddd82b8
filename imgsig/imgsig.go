// Package imgsig signs and checks the small files that vouch for a disk
// image — its SHA-256 manifest (IMAGE.sha256, sha256sum format) and its
// block map (IMAGE.bmap) — with detached signatures in minisign's format
// (FILE.minisig next to FILE), through aead.dev/minisign. The stock
// minisign tool (Debian's minisign) verifies what Sign writes and makes
// signatures Verify accepts, with the same key files:
//
//	minisign -G -W -p esxi.pub -s esxi.key      # a key pair (-W: no password)
//	minisign -S -s esxi.key -m esxi.img.zst.sha256
//	minisign -V -p esxi.pub -m esxi.img.zst.sha256
//
// The signature is over the file's bytes; what the file says (the image's
// SHA-256) then becomes the hash the restored bytes must have.
package imgsig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"aead.dev/minisign"
)

// Ext is the suffix of a detached signature: FILE.minisig signs FILE.
const Ext = ".minisig"

// MaxSignature bounds a signature file (minisign's are about 300 bytes).
const MaxSignature = 4 << 10

// Errors a check fails with (test with errors.Is); *Error says which file.
var (
	// ErrMissing: the signature file does not exist.
	ErrMissing = errors.New("no signature")
	// ErrWrongKey: the signature was made with another key than the trusted one.
	ErrWrongKey = errors.New("signed by another key")
	// ErrBad: the signature does not match the file's contents (or is malformed).
	ErrBad = errors.New("bad signature")
)

// Error is a failed check of one file.
type Error struct {
	File string // the signed file (manifest or block map)
	Sig  string // its signature file
	Kind error  // ErrMissing, ErrWrongKey or ErrBad
	Msg  string // plain words
}

func (e *Error) Error() string        { return e.Msg }
func (e *Error) Unwrap() error        { return e.Kind }
func (e *Error) Is(target error) bool { return target == e.Kind }

// PublicKey is a trusted minisign (ed25519) public key.
type PublicKey struct {
	k minisign.PublicKey
}

// ID is the key's id as minisign prints it (16 upper-case hex digits).
func (k PublicKey) ID() string { return keyID(k.k.ID()) }

// String is the key in minisign's one-line base64 form (minisign -P).
func (k PublicKey) String() string { return k.k.String() }

func keyID(id uint64) string { return fmt.Sprintf("%016X", id) }

// ParsePublicKey accepts a key as minisign -P takes it (the base64 line)
// or the text of a minisign .pub file.
func ParsePublicKey(text string) (PublicKey, error) {
	text = strings.TrimSpace(text)
	lines := strings.Split(text, "\n")
	if len(lines) >= 2 && strings.HasPrefix(lines[0], "untrusted comment:") {
		text = strings.TrimSpace(lines[1])
	}
	var k minisign.PublicKey
	if err := k.UnmarshalText([]byte(text)); err != nil {
		return PublicKey{}, fmt.Errorf("not a minisign public key: %w", err)
	}
	return PublicKey{k: k}, nil
}

// LoadPublicKey reads a key given as a file (a minisign .pub file) or,
// when arg is not an existing file's name, as the base64 key itself.
func LoadPublicKey(arg string) (PublicKey, error) {
	b, ferr := os.ReadFile(arg)
	if ferr == nil {
		k, err := ParsePublicKey(string(b))
		if err != nil {
			return PublicKey{}, fmt.Errorf("%s: %w", arg, err)
		}
		return k, nil
	}
	k, err := ParsePublicKey(arg)
	if err != nil {
		if !errors.Is(ferr, fs.ErrNotExist) {
			return PublicKey{}, fmt.Errorf("public key: %w", ferr)
		}
		return PublicKey{}, fmt.Errorf("public key %q is neither a file nor a minisign key (the base64 line of a .pub file)", arg)
	}
	return k, nil
}

// PrivateKey is a minisign secret key for signing.
type PrivateKey struct {
	k minisign.PrivateKey
}

// ID is the key's id (the id of its public key).
func (k PrivateKey) ID() string { return keyID(k.k.ID()) }

// LoadPrivateKey reads a minisign secret key file. An encrypted key (the
// default of minisign -G) needs its password: the first line of
// passwordFile. The password is never printed.
func LoadPrivateKey(path, passwordFile string) (PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("signing key: %w", err)
	}
	body := b
	if lines := bytes.SplitN(b, []byte("\n"), 2); len(lines) == 2 && bytes.HasPrefix(lines[0], []byte("untrusted comment:")) {
		body = lines[1]
	}
	body = bytes.TrimSpace(body)
	if minisign.IsEncrypted(body) {
		if passwordFile == "" {
			return PrivateKey{}, fmt.Errorf("signing key %s is encrypted: give its password in a file (-sign-password-file), or make a key without one (minisign -G -W)", path)
		}
		pw, err := os.ReadFile(passwordFile)
		if err != nil {
			return PrivateKey{}, fmt.Errorf("password file: %w", err)
		}
		line, _, _ := strings.Cut(string(pw), "\n")
		k, err := minisign.DecryptKey(strings.TrimRight(line, "\r"), body)
		if err != nil {
			return PrivateKey{}, fmt.Errorf("signing key %s: cannot decrypt it with the password given (wrong password?)", path)
		}
		return PrivateKey{k: k}, nil
	}
	var k minisign.PrivateKey
	if err := k.UnmarshalText(body); err != nil {
		return PrivateKey{}, fmt.Errorf("signing key %s: not a minisign secret key: %w", path, err)
	}
	return PrivateKey{k: k}, nil
}

// Sign returns a detached signature of data in minisign's current
// (pre-hashed, "ED") format. The trusted comment names the file and the
// time, as minisign's does.
func Sign(k PrivateKey, name string, data []byte) []byte {
	r := minisign.NewReader(bytes.NewReader(data))
	io.Copy(io.Discard, r) // a bytes.Reader does not fail
	trusted := fmt.Sprintf("timestamp:%d\tfile:%s\thashed", time.Now().Unix(), filepath.Base(name))
	return r.SignWithComments(k.k, trusted, "signature from imgcopy secret key "+k.ID())
}

// SignFile writes path+Ext, the signature of the file at path, and syncs
// it; it returns the signature's path.
func SignFile(k PrivateKey, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("signing: %w", err)
	}
	sigPath := path + Ext
	f, err := os.Create(sigPath)
	if err != nil {
		return "", fmt.Errorf("signing %s: %w", path, err)
	}
	if _, err := f.Write(Sign(k, path, data)); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", sigPath, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("writing %s: %w", sigPath, err)
	}
	return sigPath, f.Close()
}

// Verify checks sig (the contents of sigName, nil when that file does not
// exist) against data (the contents of name) and the trusted key. The
// error is an *Error naming the file that failed and why.
func Verify(k PublicKey, name string, data []byte, sigName string, sig []byte) error {
	fail := func(kind error, format string, args ...any) error {
		return &Error{File: name, Sig: sigName, Kind: kind, Msg: fmt.Sprintf(format, args...)}
	}
	if sig == nil {
		return fail(ErrMissing, "%s is not signed: no signature %s (a trusted key is set, so the image's manifest or block map must be signed: imgcopy -sign KEY, or minisign -S)", name, sigName)
	}
	var s minisign.Signature
	if err := s.UnmarshalText(sig); err != nil {
		return fail(ErrBad, "%s: not a minisign signature: %v", sigName, trimPrefix(err))
	}
	if s.KeyID != k.k.ID() {
		return fail(ErrWrongKey, "%s was signed by key %s, not by the trusted key %s (signature %s)", name, keyID(s.KeyID), k.ID(), sigName)
	}
	if !minisign.Verify(k.k, data, sig) {
		return fail(ErrBad, "%s does not match its signature %s: the file was changed after it was signed (or the signature was)", name, sigName)
	}
	return nil
}

func trimPrefix(err error) string { return strings.TrimPrefix(err.Error(), "minisign: ") }

// Manifest is a parsed sha256sum manifest: file name -> SHA-256.
type Manifest struct {
	Names []string // in file order
	Sums  map[string][]byte
}

// ParseManifest parses sha256sum output ("HEX  NAME" or "HEX *NAME" per
// line; blank lines and # comments ignored). A name listed twice with
// different sums is an error.
func ParseManifest(data []byte) (*Manifest, error) {
	m := &Manifest{Sums: map[string][]byte{}}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		hexSum, name, ok := strings.Cut(line, " ")
		if ok && (strings.HasPrefix(name, " ") || strings.HasPrefix(name, "*")) {
			name = name[1:]
		} else {
			ok = false
		}
		sum, err := parseHex(hexSum)
		if !ok || err != nil || name == "" {
			return nil, fmt.Errorf("line %d: want \"<64 hex digits>  <file name>\" (sha256sum format)", i+1)
		}
		if old, dup := m.Sums[name]; dup {
			if !bytes.Equal(old, sum) {
				return nil, fmt.Errorf("line %d: %s is listed twice with different SHA-256", i+1, name)
			}
			continue
		}
		m.Sums[name] = sum
		m.Names = append(m.Names, name)
	}
	if len(m.Names) == 0 {
		return nil, errors.New("no SHA-256 lines")
	}
	return m, nil
}

func parseHex(s string) ([]byte, error) {
	if len(s) != 64 {
		return nil, errors.New("not 64 hex digits")
	}
	b := make([]byte, 32)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(v)
	}
	return b, nil
}

// compressedExt are the suffixes of compressed image files.
var compressedExt = []string{".zst", ".zstd", ".gz", ".xz"}

// IsCompressedName reports whether name ends in a compression suffix.
func IsCompressedName(name string) bool {
	for _, e := range compressedExt {
		if strings.HasSuffix(name, e) {
			return true
		}
	}
	return false
}

// RawSHA256 returns the SHA-256 of the uncompressed image the manifest
// describes: the entry named raw (the image's name without its
// compression suffix) if there is one, else the only entry whose name has
// no compression suffix. imgcopy's backups list the compressed file and
// the raw image; a plain `sha256sum esxi.img` lists the raw image.
func (m *Manifest) RawSHA256(raw string) (string, []byte, error) {
	if s, ok := m.Sums[raw]; ok && raw != "" {
		return raw, s, nil
	}
	var cands []string
	for _, n := range m.Names {
		if !IsCompressedName(n) {
			cands = append(cands, n)
		}
	}
	switch len(cands) {
	case 1:
		return cands[0], m.Sums[cands[0]], nil
	case 0:
		return "", nil, fmt.Errorf("it lists only compressed files (%s), not the SHA-256 of the uncompressed image", strings.Join(m.Names, ", "))
	}
	return "", nil, fmt.Errorf("it lists no %q and several uncompressed images (%s)", raw, strings.Join(cands, ", "))
}
