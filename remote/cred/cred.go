// Package cred reads the credentials file of imgcopy -cred and rescue.cred=:
// key=value lines (user=, password=, domain=, ssh_key=, known_hosts=,
// s3_access_key=, s3_secret_key=, s3_session_token=), '#' comments and blank
// lines allowed. It also scrubs secrets from text before it is shown:
// every value of a loaded file's secret keys and every password in a URL.
package cred

import (
	"bufio"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Cred holds the credentials for one remote. Empty fields are not set.
type Cred struct {
	User, Password, Domain string // SMB (User also SFTP)
	SSHKey                 string // SFTP: path of a private key file
	KnownHosts             string // SFTP: path of a known_hosts file
	S3AccessKey            string
	S3SecretKey            string
	S3SessionToken         string
}

// String never shows a secret.
func (c *Cred) String() string {
	if c == nil {
		return "no credentials"
	}
	var parts []string
	add := func(k, v string, secret bool) {
		if v == "" {
			return
		}
		if secret {
			v = "***"
		}
		parts = append(parts, k+"="+v)
	}
	add("user", c.User, false)
	add("password", c.Password, true)
	add("domain", c.Domain, false)
	add("ssh_key", c.SSHKey, false)
	add("known_hosts", c.KnownHosts, false)
	add("s3_access_key", c.S3AccessKey, true)
	add("s3_secret_key", c.S3SecretKey, true)
	add("s3_session_token", c.S3SessionToken, true)
	return strings.Join(parts, " ")
}

// GoString is String, so %#v shows no secret either.
func (c *Cred) GoString() string { return c.String() }

// Parse reads a credentials file. Unknown keys are an error (a typo would
// otherwise silently drop a credential); the error names the line, never
// its value.
func Parse(r io.Reader) (*Cred, error) {
	c := &Cred{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(strings.TrimPrefix(sc.Text(), "\ufeff"))
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("credentials line %d: want key=value", n)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		var dst *string
		secret := false
		switch k {
		case "user", "username":
			dst = &c.User
		case "password":
			dst, secret = &c.Password, true
		case "domain", "workgroup":
			dst = &c.Domain
		case "ssh_key":
			dst = &c.SSHKey
		case "known_hosts":
			dst = &c.KnownHosts
		case "s3_access_key", "aws_access_key_id":
			dst, secret = &c.S3AccessKey, true
		case "s3_secret_key", "aws_secret_access_key":
			dst, secret = &c.S3SecretKey, true
		case "s3_session_token", "aws_session_token":
			dst, secret = &c.S3SessionToken, true
		default:
			return nil, fmt.Errorf("credentials line %d: unknown key %q (want user, password, domain, ssh_key, known_hosts, s3_access_key, s3_secret_key, s3_session_token)", n, k)
		}
		*dst = v
		if secret {
			AddSecret(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	return c, nil
}

// Load reads the credentials file at path.
func Load(path string) (*Cred, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

var (
	mu      sync.Mutex
	secrets []string // longest first
)

// AddSecret registers a value that Scrub replaces by "***" wherever it
// appears (values shorter than 4 bytes are ignored: they would mangle
// ordinary text and are no secret worth the name).
func AddSecret(s string) {
	if len(s) < 4 {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	for _, x := range secrets {
		if x == s {
			return
		}
	}
	secrets = append(secrets, s, url.QueryEscape(s), url.PathEscape(s))
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
}

// urlPassword matches the password of SCHEME://USER:PASSWORD@ in text.
var urlPassword = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):([^@\s/]*)@`)

// signedQuery matches the secret parts of presigned URLs.
var signedQuery = regexp.MustCompile(`(?i)((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig|AWSAccessKeyId)=)[^&\s"']*`)

// Scrub returns s with every registered secret, URL password and
// presigned-URL signature replaced by "***".
func Scrub(s string) string {
	s = urlPassword.ReplaceAllString(s, "$1:***@")
	s = signedQuery.ReplaceAllString(s, "${1}***")
	mu.Lock()
	defer mu.Unlock()
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "***")
		}
	}
	return s
}

// ScrubError wraps err so that its message is scrubbed; errors.Is and
// errors.As still see the original.
func ScrubError(err error) error {
	if err == nil {
		return nil
	}
	return &scrubbed{err}
}

type scrubbed struct{ err error }

func (s *scrubbed) Error() string { return Scrub(s.err.Error()) }
func (s *scrubbed) Unwrap() error { return s.err }
