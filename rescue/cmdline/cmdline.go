// Package cmdline parses the rescue system's hands-off settings from the
// kernel command line (/proc/cmdline) and the optional text file on the USB
// stick: rescue.action, rescue.image, rescue.sha256, rescue.bmap, rescue.target,
// rescue.ref, rescue.done, rescue.report, rescue.job, rescue.syslog,
// rescue.pubkey, rescue.manifest, rescue.ssh, rescue.delta, rescue.http_conns,
// rescue.source, rescue.dest, rescue.compress, rescue.overwrite,
// rescue.testpause, ip=, BOOTIF= and modules_load=. Parse validates everything up front so that a typo stops
// the flow before it touches a disk.
package cmdline

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/esxi-rescue/rescue/imgsig"
	"github.com/esxi-rescue/rescue/remote"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/rescue/netup"
	"github.com/esxi-rescue/rescue/udpcast"
)

// Action is one step of the hands-off flow.
type Action string

// The actions rescue.action= accepts, in the order they run.
const (
	ActionBackup  Action = "backup"  // copy rescue.source to rescue.dest (first: before anything writes)
	ActionRestore Action = "restore" // copy rescue.image onto the target
	ActionFix     Action = "fix"     // put the GPT right slot for slot
	ActionVerify  Action = "verify"  // re-read and compare with the reference
	ActionBoot    Action = "boot"    // kexec into ESXi on the target (esxiboot)
	ActionShell   Action = "shell"   // interactive shell (the default)
)

// Order lists the actions in the order the flow runs them, whatever order
// the command line gives.
var Order = []Action{ActionBackup, ActionRestore, ActionFix, ActionVerify, ActionBoot, ActionShell}

// Done says what happens after a successful flow.
type Done string

// The values of rescue.done=.
const (
	DoneShell    Done = "shell"
	DoneReboot   Done = "reboot"
	DonePoweroff Done = "poweroff"
	DoneBoot     Done = "boot"
)

// Reference kinds for rescue.ref= (any other value is a path or URL of a
// layout file).
const (
	RefImage = "image" // the GPT of rescue.image
	RefESXi  = "esxi"  // the canonical ESXi layout recognised on the target
)

// TargetAuto asks for automatic target selection.
const TargetAuto = "auto"

// TestPauses lists the accepted rescue.testpause= values (hooks for the
// crash-safety tests in QEMU).
var TestPauses = []string{"between-backup-and-primary"}

// Config is the validated hands-off configuration.
type Config struct {
	Actions      []Action         // in Order; [shell] when nothing was asked for
	Image        string           // path, http(s) URL or share URL (smb, nfs, sftp, s3); "" if none
	SHA256       []byte           // expected digest of the (decompressed) image, nil if none
	Bmap         string           // path or http(s) URL of the image's block map; "" if none
	Target       string           // /dev/... or "auto"; "" when no disk action
	Ref          string           // "image", "esxi" or a path/URL of a layout file
	Done         Done             // what to do after success
	Report       string           // http(s) URL to POST the JSON report to, "" if none
	Job          string           // rescue.job=: http(s) URL of this machine's job (${mac}, ${serial} not yet expanded), "" if none
	Syslog       string           // rescue.syslog=: [udp://|tcp://]HOST[:PORT] to send console lines to, "" if none
	Cred         string           // rescue.cred=: credentials file for share URLs (a path, looked up in the rescue system and then on the stick's FAT partition, or an http(s) URL)
	PubKey       string           // rescue.pubkey=: trusted minisign public key (base64) or an absolute path of a .pub file; "" if none
	Delta        bool             // rescue.delta=1: the restore writes only the blocks that differ from what the target holds
	HTTPConns    int              // rescue.http_conns=N: connections for an http(s) image (1-8); 0 = imaging's default (4)
	Manifest     string           // rescue.manifest=: path or URL of the image's sha256sum manifest; "" = beside the image (with PubKey)
	SSH          string           // rescue.ssh=: path or URL of the authorized_keys that may log in by SSH; "" = no SSH server
	IP           *netup.IPConfig  // nil: no network wanted
	BootIF       net.HardwareAddr // PXE boot interface, nil if not given
	Modules      []string         // modules_load=
	BackupSource string           // rescue.source=: the disk to back up, /dev/... or "auto"; "" without backup
	BackupDest   string           // rescue.dest=: the share URL the backup is written to (smb, nfs, sftp, s3); "" without backup
	Compress     string           // rescue.compress=: zstd (default), gzip or none; "" without backup
	Overwrite    bool             // rescue.overwrite=yes: replace an existing image at rescue.dest
	TestPause    string           // rescue.testpause=, "" normally
	Debug        bool             // rescue.debug: verbose logs
	// Source names each key's origin ("/proc/cmdline" or the stick file),
	// for the report.
	Source map[string]string
}

// Has reports whether a is among the configured actions.
func (c *Config) Has(a Action) bool {
	for _, x := range c.Actions {
		if x == a {
			return true
		}
	}
	return false
}

// Interactive reports whether the only action is the shell.
func (c *Config) Interactive() bool {
	return len(c.Actions) == 1 && c.Actions[0] == ActionShell
}

// WritesDisk reports whether the flow writes to the target disk.
func (c *Config) WritesDisk() bool { return c.Has(ActionRestore) || c.Has(ActionFix) }

// IsShare reports whether s is a share URL of package remote (smb://,
// nfs://, sftp://, ssh://, s3://).
func IsShare(s string) bool { return remote.IsURL(s) }

// IsURL reports whether s is an http or https URL.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// Arg is one key[=value] argument of a command line.
type Arg struct {
	Key, Value string
	HasValue   bool
	Source     string
}

// Split splits a kernel command line into arguments the way the kernel
// does (lib/cmdline.c next_arg): space separated, double quotes group
// spaces and are removed. In file mode, text from '#' to the end of a line
// is a comment and newlines separate like spaces.
func Split(text, source string, file bool) []Arg {
	var args []Arg
	var tok strings.Builder
	inQuote, have := false, false
	flush := func() {
		if !have {
			return
		}
		t := tok.String()
		k, v, ok := strings.Cut(t, "=")
		args = append(args, Arg{Key: k, Value: v, HasValue: ok, Source: source})
		tok.Reset()
		have = false
	}
	for i := 0; i < len(text); i++ {
		ch := text[i]
		switch {
		case ch == '"':
			inQuote = !inQuote
			have = true
		case file && ch == '#' && !inQuote:
			for i < len(text) && text[i] != '\n' {
				i++
			}
			flush()
		case (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') && !inQuote:
			flush()
		default:
			tok.WriteByte(ch)
			have = true
		}
	}
	flush()
	return args
}

// rescueKeys are the rescue.* keys Parse knows; any other rescue.* key is a
// typo and an error.
var rescueKeys = map[string]bool{
	"rescue.action": true, "rescue.image": true, "rescue.sha256": true, "rescue.bmap": true,
	"rescue.target": true, "rescue.ref": true, "rescue.done": true,
	"rescue.report": true, "rescue.testpause": true, "rescue.debug": true,
	"rescue.job": true, "rescue.syslog": true, "rescue.cred": true,
	"rescue.pubkey": true, "rescue.manifest": true, "rescue.ssh": true,
	"rescue.delta": true, "rescue.http_conns": true,
	"rescue.source": true, "rescue.dest": true, "rescue.compress": true, "rescue.overwrite": true,
}

// Parse validates the arguments of the kernel command line and, after
// them, of the stick file (later keys win, so the stick file overrides
// the built-in command line). Unrelated kernel arguments are ignored.
func Parse(args []Arg) (*Config, error) {
	vals := map[string]Arg{}
	for _, a := range args {
		switch {
		case strings.HasPrefix(a.Key, "rescue."):
			if !rescueKeys[a.Key] {
				return nil, fmt.Errorf("%s: unknown setting %q (known: rescue.action, image, sha256, target, ref, done, report)", a.Source, a.Key)
			}
			if !a.HasValue && a.Key != "rescue.debug" {
				return nil, fmt.Errorf("%s: %s needs a value (%s=...)", a.Source, a.Key, a.Key)
			}
		case a.Key == "ip", a.Key == "BOOTIF", a.Key == "modules_load":
		default:
			continue
		}
		vals[a.Key] = a
	}
	c := &Config{Source: map[string]string{}}
	for k, a := range vals {
		c.Source[k] = a.Source
	}
	get := func(k string) string { return vals[k].Value }
	has := func(k string) bool { _, ok := vals[k]; return ok }

	// Actions.
	want := map[Action]bool{}
	if v := get("rescue.action"); v != "" {
		for _, s := range strings.Split(v, ",") {
			a := Action(strings.TrimSpace(s))
			known := false
			for _, o := range Order {
				known = known || o == a
			}
			if !known {
				return nil, fmt.Errorf("rescue.action=%s: unknown action %q (want a comma list of backup, restore, fix, verify, boot, shell)", v, a)
			}
			want[a] = true
		}
	} else if has("rescue.action") {
		return nil, fmt.Errorf("rescue.action= is empty (want a comma list of backup, restore, fix, verify, boot, shell)")
	}
	for _, a := range Order {
		if want[a] {
			c.Actions = append(c.Actions, a)
		}
	}
	if len(c.Actions) == 0 {
		c.Actions = []Action{ActionShell}
	}

	// Image and digest.
	c.Image = get("rescue.image")
	if has("rescue.image") {
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.image= is empty (want a path or an http(s) URL)")
		}
		if udpcast.IsURL(c.Image) {
			if _, err := udpcast.Parse(c.Image); err != nil {
				return nil, fmt.Errorf("rescue.image=%w", err)
			}
		} else if err := checkLocation("rescue.image", c.Image); err != nil {
			return nil, err
		}
	}
	if v := get("rescue.sha256"); has("rescue.sha256") {
		b, err := hex.DecodeString(strings.ToLower(v))
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("rescue.sha256=%s: want 64 hex digits", v)
		}
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.sha256= given without rescue.image=")
		}
		c.SHA256 = b
	}
	if has("rescue.bmap") {
		c.Bmap = get("rescue.bmap")
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.bmap= given without rescue.image=")
		}
		if err := checkLocation("rescue.bmap", c.Bmap); err != nil {
			return nil, err
		}
	}
	if has("rescue.manifest") {
		c.Manifest = get("rescue.manifest")
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.manifest= given without rescue.image=")
		}
		if err := checkLocation("rescue.manifest", c.Manifest); err != nil {
			return nil, err
		}
	}
	if has("rescue.pubkey") {
		c.PubKey = get("rescue.pubkey")
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.pubkey= given without rescue.image=")
		}
		if err := checkPubKey(c.PubKey); err != nil {
			return nil, err
		}
	}
	if v := get("rescue.delta"); has("rescue.delta") {
		switch v {
		case "1":
			c.Delta = true
		case "0":
		default:
			return nil, fmt.Errorf("rescue.delta=%s: want 1 (write only the blocks that differ from the target) or 0", v)
		}
		if c.Delta && c.Image == "" {
			return nil, fmt.Errorf("rescue.delta=1 given without rescue.image=")
		}
	}
	if v := get("rescue.http_conns"); has("rescue.http_conns") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 8 {
			return nil, fmt.Errorf("rescue.http_conns=%s: want 1 to 8 (connections for an http(s) image; 1: one stream)", v)
		}
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.http_conns= given without rescue.image=")
		}
		c.HTTPConns = n
	}
	if c.Has(ActionRestore) && c.Image == "" {
		return nil, fmt.Errorf("rescue.action=restore needs rescue.image= (a path or an http(s) URL)")
	}
	if c.Multicast() && c.SHA256 == nil && c.Bmap == "" && c.Manifest == "" {
		return nil, fmt.Errorf("rescue.image=%s: a multicast restore needs the image's SHA-256: rescue.sha256=, rescue.manifest= or rescue.bmap=", c.Image)
	}
	if c.Multicast() && c.PubKey != "" && c.Bmap == "" && c.Manifest == "" {
		return nil, fmt.Errorf("rescue.pubkey= with a multicast image needs rescue.manifest= or rescue.bmap= (the signed file; nothing lies beside a multicast stream)")
	}
	if has("rescue.ssh") {
		c.SSH = get("rescue.ssh")
		if err := checkLocation("rescue.ssh", c.SSH); err != nil {
			return nil, err
		}
	}

	if err := parseBackup(c, get, has); err != nil {
		return nil, err
	}

	// Target.
	c.Target = get("rescue.target")
	needsDisk := c.Has(ActionRestore) || c.Has(ActionFix) || c.Has(ActionVerify) || c.Has(ActionBoot)
	if c.Target != "" && c.Target != TargetAuto && !strings.HasPrefix(c.Target, "/dev/") {
		return nil, fmt.Errorf("rescue.target=%s: want a device under /dev/ (e.g. /dev/sda) or auto", c.Target)
	}
	if needsDisk && c.Target == "" {
		return nil, fmt.Errorf("rescue.action=%s needs rescue.target= (a device such as /dev/sda, or auto)", joinActions(c.Actions))
	}

	// Reference.
	c.Ref = get("rescue.ref")
	switch {
	case c.Ref == "" && c.Multicast():
		c.Ref = RefESXi // a multicast stream cannot be read ahead for its table
	case c.Ref == RefImage && c.Multicast():
		return nil, fmt.Errorf("rescue.ref=image: a multicast image cannot be read ahead; use rescue.ref=esxi or the backup's .gpt.json layout file")
	case c.Ref == "" && c.Image != "" && c.Has(ActionRestore):
		c.Ref = RefImage
	case c.Ref == "":
		c.Ref = RefESXi
	case c.Ref == RefImage:
		if c.Image == "" {
			return nil, fmt.Errorf("rescue.ref=image needs rescue.image=")
		}
	case c.Ref == RefESXi:
	default:
		if err := checkLocation("rescue.ref", c.Ref); err != nil {
			return nil, err
		}
	}

	// Done.
	switch d := Done(get("rescue.done")); d {
	case "":
		c.Done = DoneShell
		if c.Has(ActionBoot) {
			c.Done = DoneBoot
		}
	case DoneShell, DoneReboot, DonePoweroff, DoneBoot:
		c.Done = d
		if c.Has(ActionBoot) && d != DoneBoot {
			return nil, fmt.Errorf("rescue.action=boot conflicts with rescue.done=%s", d)
		}
	default:
		return nil, fmt.Errorf("rescue.done=%s: want reboot, poweroff, shell or boot", d)
	}
	if c.Done == DoneBoot && c.Target == "" {
		return nil, fmt.Errorf("rescue.done=boot needs rescue.target= (the disk to boot)")
	}
	if c.Done == DoneBoot && !c.Has(ActionBoot) {
		c.Actions = insertBefore(c.Actions, ActionBoot, ActionShell)
	}

	// Report.
	if has("rescue.report") {
		c.Report = get("rescue.report")
		if !IsURL(c.Report) {
			return nil, fmt.Errorf("rescue.report=%s: want an http:// or https:// URL", c.Report)
		}
		if _, err := url.Parse(c.Report); err != nil {
			return nil, fmt.Errorf("rescue.report=%s: %w", c.Report, err)
		}
	}

	// Jobs and remote logging.
	if has("rescue.job") {
		c.Job = get("rescue.job")
		if err := CheckJobURL(c.Job); err != nil {
			return nil, err
		}
	}
	if has("rescue.syslog") {
		c.Syslog = get("rescue.syslog")
		if _, _, err := SyslogAddr(c.Syslog); err != nil {
			return nil, err
		}
	}

	// Credentials for share URLs.
	if has("rescue.cred") {
		c.Cred = get("rescue.cred")
		switch {
		case c.Cred == "":
			return nil, fmt.Errorf("rescue.cred= is empty (want the path of a credentials file on the rescue stick, or an http(s) URL)")
		case IsShare(c.Cred):
			return nil, fmt.Errorf("rescue.cred= cannot be a share URL (its own credentials would be needed): use a path on the rescue stick or an http(s) URL")
		}
		if err := checkLocation("rescue.cred", c.Cred); err != nil {
			return nil, err
		}
	}

	// Test hook.
	if has("rescue.testpause") {
		c.TestPause = get("rescue.testpause")
		ok := false
		for _, p := range TestPauses {
			ok = ok || p == c.TestPause
		}
		if !ok {
			return nil, fmt.Errorf("rescue.testpause=%s: unknown pause point (known: %s)", c.TestPause, strings.Join(TestPauses, ", "))
		}
	}
	if has("rescue.debug") {
		c.Debug = get("rescue.debug") != "0"
	}

	// Network.
	if has("ip") {
		ip, err := netup.ParseIP(get("ip"))
		if err != nil {
			return nil, err
		}
		if ip.Mode != netup.ModeOff {
			c.IP = ip
		}
	} else if c.NeedsNetwork() {
		c.IP = &netup.IPConfig{Mode: netup.ModeDHCP}
	}
	if has("ip") && c.IP == nil && c.NeedsNetwork() {
		return nil, fmt.Errorf("ip=%s but a URL is configured: the network is needed", get("ip"))
	}
	if has("BOOTIF") {
		mac, err := netup.ParseBOOTIF(get("BOOTIF"))
		if err != nil {
			return nil, err
		}
		c.BootIF = mac
	}
	if v := get("modules_load"); v != "" {
		for _, m := range strings.Split(v, ",") {
			if m = strings.TrimSpace(m); m != "" {
				c.Modules = append(c.Modules, m)
			}
		}
	}
	return c, nil
}

// NeedsNetwork reports whether a URL (image, report, reference, job) or
// a syslog server is configured.
func (c *Config) NeedsNetwork() bool {
	return IsURL(c.Image) || IsURL(c.Report) || IsURL(c.Ref) || c.Job != "" || c.Syslog != "" ||
		IsShare(c.Image) || IsShare(c.Ref) || IsShare(c.Bmap) || IsURL(c.Bmap) || IsURL(c.Cred) ||
		c.Multicast() || IsURL(c.Manifest) || c.SSH != "" || IsShare(c.BackupDest)
}

// parseBackup validates rescue.source=, rescue.dest=, rescue.compress= and
// rescue.overwrite=, which only rescue.action=backup takes.
func parseBackup(c *Config, get func(string) string, has func(string) bool) error {
	if !c.Has(ActionBackup) {
		for _, k := range []string{"rescue.source", "rescue.dest", "rescue.compress", "rescue.overwrite"} {
			if has(k) {
				return fmt.Errorf("%s= given without rescue.action=backup", k)
			}
		}
		return nil
	}
	c.BackupSource, c.BackupDest = get("rescue.source"), get("rescue.dest")
	switch {
	case c.BackupSource == "":
		return fmt.Errorf("rescue.action=backup needs rescue.source= (the disk: a device such as /dev/sda, or auto)")
	case c.BackupSource != TargetAuto && !strings.HasPrefix(c.BackupSource, "/dev/"):
		return fmt.Errorf("rescue.source=%s: want a device under /dev/ (e.g. /dev/sda) or auto", c.BackupSource)
	case c.BackupDest == "":
		return fmt.Errorf("rescue.action=backup needs rescue.dest= (an smb://, nfs://, sftp:// or s3:// URL of the image to write)")
	case !IsShare(c.BackupDest):
		return fmt.Errorf("rescue.dest=%s: want an smb://, nfs://, sftp:// or s3:// URL (the rescue system's own files do not outlive it)", cred.Scrub(c.BackupDest))
	}
	if err := checkLocation("rescue.dest", c.BackupDest); err != nil {
		return err
	}
	switch c.Compress = get("rescue.compress"); c.Compress {
	case "":
		c.Compress = "zstd"
	case "zstd", "gzip", "none":
	default:
		return fmt.Errorf("rescue.compress=%s: want zstd, gzip or none", c.Compress)
	}
	switch v := get("rescue.overwrite"); v {
	case "", "no":
	case "yes":
		c.Overwrite = true
	default:
		return fmt.Errorf("rescue.overwrite=%s: want yes or no", v)
	}
	return nil
}

// Multicast reports whether the image comes by udpcast multicast.
func (c *Config) Multicast() bool { return udpcast.IsURL(c.Image) }

// checkPubKey validates rescue.pubkey=: a minisign public key (the base64
// line) or the absolute path of a .pub file; never a URL (a key fetched
// over the network the image comes over proves nothing).
func checkPubKey(v string) error {
	switch {
	case strings.Contains(v, "://"):
		return fmt.Errorf("rescue.pubkey=%s: give the key itself (the base64 line of the .pub file) or a file on the rescue medium, not a URL: a key fetched over the network proves nothing", v)
	case strings.HasPrefix(v, "/"):
		return nil
	}
	if _, err := imgsig.ParsePublicKey(v); err != nil {
		return fmt.Errorf("rescue.pubkey=%s: %w (want the base64 line of a minisign .pub file, or its absolute path)", v, err)
	}
	return nil
}

// CheckJobURL validates a rescue.job= value: an http(s) URL with a host,
// where ${mac} and ${serial} may stand for the boot NIC's MAC and the DMI
// serial number.
func CheckJobURL(v string) error {
	if !IsURL(v) {
		return fmt.Errorf("rescue.job=%s: want an http:// or https:// URL", v)
	}
	probe := strings.NewReplacer("${mac}", "52-54-00-00-00-01", "${serial}", "SN1").Replace(v)
	if strings.Contains(probe, "${") {
		return fmt.Errorf("rescue.job=%s: unknown ${...} (known: ${mac}, ${serial})", v)
	}
	return checkLocation("rescue.job", probe)
}

// SyslogAddr splits a rescue.syslog= value, [udp://|tcp://]HOST[:PORT],
// into the network ("udp" by default) and HOST:PORT (port 514 by default).
func SyslogAddr(v string) (network, addr string, err error) {
	network, rest := "udp", v
	if n, r, ok := strings.Cut(v, "://"); ok {
		network, rest = n, r
	}
	if network != "udp" && network != "tcp" {
		return "", "", fmt.Errorf("rescue.syslog=%s: want udp:// or tcp:// (RFC 5424), or a plain HOST[:PORT] for UDP", v)
	}
	rest = strings.TrimSuffix(rest, "/")
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		host, port = strings.Trim(rest, "[]"), "514"
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return "", "", fmt.Errorf("rescue.syslog=%s: want HOST[:PORT]", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", "", fmt.Errorf("rescue.syslog=%s: bad port %q", v, port)
	}
	return network, net.JoinHostPort(host, port), nil
}

func checkLocation(key, v string) error {
	if IsShare(v) {
		if _, err := remote.Parse(v); err != nil {
			return fmt.Errorf("%s=: %w", key, err)
		}
		return nil
	}
	if IsURL(v) {
		u, err := url.Parse(v)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", key, v, err)
		}
		if u.Host == "" {
			return fmt.Errorf("%s=%s: URL without a host", key, v)
		}
		return nil
	}
	if strings.Contains(v, "://") {
		return fmt.Errorf("%s=%s: only http(s)://, smb://, nfs://, sftp://, ssh:// and s3:// URLs are supported", key, cred.Scrub(v))
	}
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("%s=%s: want an absolute path or an http(s) URL", key, v)
	}
	return nil
}

// RedactURL hides what may be a secret in a URL for logs and reports: the
// password of its user info and its query string (S3 pre-signed URLs
// carry their signature there).
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = "redacted"
	}
	return u.String()
}

// RedactLine is a kernel command line with RedactURL applied to every
// key=URL word, for the report.
func RedactLine(line string) string {
	f := strings.Fields(line)
	for i, w := range f {
		if k, v, ok := strings.Cut(w, "="); ok && (IsURL(v) || strings.Contains(v, "://")) {
			f[i] = k + "=" + RedactURL(v)
		}
	}
	return strings.Join(f, " ")
}

func joinActions(as []Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = string(a)
	}
	return strings.Join(s, ",")
}

func insertBefore(as []Action, a, before Action) []Action {
	for i, x := range as {
		if x == before {
			return append(as[:i:i], append([]Action{a}, as[i:]...)...)
		}
	}
	return append(as, a)
}

// Read returns the arguments of the kernel command line file (normally
// /proc/cmdline) followed by those of the optional stick file (kernel
// command line syntax, several lines allowed, '#' comments); stick may be
// "" when there is none.
func Read(procCmdline, stick string) ([]Arg, error) {
	b, err := os.ReadFile(procCmdline)
	if err != nil {
		return nil, fmt.Errorf("reading the kernel command line: %w", err)
	}
	args := Split(string(b), procCmdline, false)
	if stick != "" {
		b, err := os.ReadFile(stick)
		if err != nil {
			return nil, fmt.Errorf("reading the settings file on the stick: %w", err)
		}
		args = append(args, Split(string(b), stick, true)...)
	}
	return args, nil
}

// Summary is the configuration in plain key/value form for the report.
func (c *Config) Summary() map[string]any {
	m := map[string]any{
		"actions": c.Actions, "target": c.Target, "ref": cred.Scrub(c.Ref), "done": c.Done,
	}
	if c.Image != "" {
		m["image"] = cred.Scrub(c.Image)
	}
	if c.Cred != "" {
		m["cred"] = RedactURL(c.Cred)
		if !IsURL(c.Cred) {
			m["cred"] = c.Cred
		}
	}
	if c.SHA256 != nil {
		m["sha256"] = hex.EncodeToString(c.SHA256)
	}
	if c.Bmap != "" {
		m["bmap"] = cred.Scrub(c.Bmap)
	}
	if c.Delta {
		m["delta"] = true
	}
	if c.HTTPConns != 0 {
		m["http_conns"] = c.HTTPConns
	}
	if c.Report != "" {
		m["report"] = RedactURL(c.Report)
	}
	if c.Job != "" {
		m["job"] = RedactURL(c.Job)
	}
	if c.PubKey != "" {
		m["pubkey"] = c.PubKey
	}
	if c.Manifest != "" {
		m["manifest"] = RedactURL(c.Manifest)
	}
	if c.BackupDest != "" {
		m["backup"] = map[string]any{"source": c.BackupSource, "dest": cred.Scrub(c.BackupDest), "compress": c.Compress, "overwrite": c.Overwrite}
	}
	if c.SSH != "" {
		m["ssh"] = RedactURL(c.SSH)
	}
	if c.Syslog != "" {
		m["syslog"] = c.Syslog
	}
	if c.IP != nil {
		m["ip"] = string(c.IP.Mode)
		if c.IP.Device != "" {
			m["ip_device"] = c.IP.Device
		}
	}
	if c.BootIF != nil {
		m["bootif"] = c.BootIF.String()
	}
	if len(c.Modules) > 0 {
		m["modules_load"] = c.Modules
	}
	if c.TestPause != "" {
		m["testpause"] = c.TestPause
	}
	m["sources"] = c.BackupSource
	return m
}
