package cmdline

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/rescue/netup"
)

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		file bool
		want []string // key=value or key
	}{
		{in: "console=ttyS0 quiet rescue.action=fix", want: []string{"console=ttyS0", "quiet", "rescue.action=fix"}},
		{in: `a="b c" d`, want: []string{"a=b c", "d"}},
		{in: `"rescue.image=/x y"`, want: []string{"rescue.image=/x y"}},
		{in: "  lots   of\tspace\n", want: []string{"lots", "of", "space"}},
		{in: "# comment\nrescue.action=fix # trailing\nrescue.target=auto\n", file: true,
			want: []string{"rescue.action=fix", "rescue.target=auto"}},
		{in: "# comment\nrescue.action=fix", want: []string{"#", "comment", "rescue.action=fix"}},
		{in: "k=", want: []string{"k="}},
		{in: "", want: nil},
	} {
		var got []string
		for _, a := range Split(tc.in, "test", tc.file) {
			if a.HasValue {
				got = append(got, a.Key+"="+a.Value)
			} else {
				got = append(got, a.Key)
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Split(%q, file=%v) = %q, want %q", tc.in, tc.file, got, tc.want)
		}
	}
}

// pubkey is a minisign public key (minisign -G).
const pubkey = "RWQYtdMpP58xjILkCz3SWEuBl+2p0jfOKF5elmYPCsGG2doDkmNy+9hc"

const sum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		stick   string
		check   func(t *testing.T, c *Config)
		wantErr string
	}{
		{name: "empty is the interactive shell", line: "console=ttyS0 panic=-1", check: func(t *testing.T, c *Config) {
			if !c.Interactive() || c.Done != DoneShell || c.IP != nil || c.WritesDisk() || c.Ref != RefESXi {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "hands-off restore over HTTP", line: "rescue.action=verify,fix,restore rescue.image=http://10.0.2.2:8080/esxi.img.zst rescue.sha256=" + sum +
			" rescue.bmap=http://10.0.2.2:8080/esxi.img.bmap rescue.target=auto rescue.done=poweroff rescue.report=http://10.0.2.2:8080/report BOOTIF=01-52-54-00-12-34-56",
			check: func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c.Actions, []Action{ActionRestore, ActionFix, ActionVerify}) {
					t.Errorf("actions %v", c.Actions)
				}
				if c.Ref != RefImage || c.Done != DonePoweroff || c.Target != "auto" || hex.EncodeToString(c.SHA256) != sum {
					t.Errorf("got %+v", c)
				}
				if c.IP == nil || c.IP.Mode != netup.ModeDHCP {
					t.Errorf("an image URL should default to ip=dhcp, got %+v", c.IP)
				}
				if c.BootIF.String() != "52:54:00:12:34:56" || !c.WritesDisk() {
					t.Errorf("got %+v", c)
				}
				if c.Bmap != "http://10.0.2.2:8080/esxi.img.bmap" {
					t.Errorf("Bmap %q", c.Bmap)
				}
				if s := c.Summary(); s["sha256"] != sum || s["bmap"] != c.Bmap || s["bootif"] != "52:54:00:12:34:56" || s["ip"] != "dhcp" {
					t.Errorf("Summary = %v", s)
				}
			}},
		{name: "fix defaults to the esxi reference", line: "rescue.action=fix,verify rescue.target=/dev/sda", check: func(t *testing.T, c *Config) {
			if c.Ref != RefESXi || c.IP != nil || c.Target != "/dev/sda" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "fix with image ref", line: "rescue.action=fix rescue.target=/dev/sda rescue.image=/mnt/esxi.img rescue.ref=image", check: func(t *testing.T, c *Config) {
			if c.Ref != RefImage {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "layout URL ref brings the network up", line: "rescue.action=fix rescue.target=/dev/sda rescue.ref=http://h/layout.json", check: func(t *testing.T, c *Config) {
			if c.Ref != "http://h/layout.json" || c.IP == nil {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "static ip", line: "rescue.action=fix rescue.target=auto ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off", check: func(t *testing.T, c *Config) {
			if c.IP == nil || c.IP.Mode != netup.ModeStatic || c.IP.Device != "eth0" {
				t.Errorf("got %+v", c.IP)
			}
		}},
		{name: "done=boot adds the boot step", line: "rescue.action=fix rescue.target=auto rescue.done=boot", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c.Actions, []Action{ActionFix, ActionBoot}) {
				t.Errorf("actions %v", c.Actions)
			}
		}},
		{name: "boot action implies done=boot", line: "rescue.action=boot rescue.target=/dev/nvme0n1", check: func(t *testing.T, c *Config) {
			if c.Done != DoneBoot {
				t.Errorf("done %v", c.Done)
			}
		}},
		{name: "stick file overrides the built-in line", line: "rescue.action=shell", stick: "# hands-off\nrescue.action=fix\nrescue.target=auto\n",
			check: func(t *testing.T, c *Config) {
				if !reflect.DeepEqual(c.Actions, []Action{ActionFix}) || c.Source["rescue.action"] != "stick" {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "modules_load", line: "modules_load=e1000e,,igb", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c.Modules, []string{"e1000e", "igb"}) {
				t.Errorf("modules %v", c.Modules)
			}
		}},
		{name: "testpause", line: "rescue.action=fix rescue.target=auto rescue.testpause=between-backup-and-primary", check: func(t *testing.T, c *Config) {
			if c.TestPause != "between-backup-and-primary" {
				t.Errorf("got %q", c.TestPause)
			}
		}},
		{name: "quoted image path", line: `rescue.action=restore "rescue.image=/mnt/my image.img" rescue.target=auto`, check: func(t *testing.T, c *Config) {
			if c.Image != "/mnt/my image.img" {
				t.Errorf("image %q", c.Image)
			}
		}},
		{name: "unknown action", line: "rescue.action=restor", wantErr: `unknown action "restor"`},
		{name: "empty action", line: "rescue.action=", wantErr: "rescue.action= is empty"},
		{name: "typo key", line: "rescue.targt=/dev/sda", wantErr: `unknown setting "rescue.targt"`},
		{name: "key without value", line: "rescue.image", wantErr: "needs a value"},
		{name: "restore without image", line: "rescue.action=restore rescue.target=auto", wantErr: "needs rescue.image="},
		{name: "fix without target", line: "rescue.action=fix", wantErr: "needs rescue.target="},
		{name: "bad target", line: "rescue.action=fix rescue.target=sda", wantErr: "want a device under /dev/"},
		{name: "bad sha", line: "rescue.image=/x rescue.sha256=abc", wantErr: "64 hex digits"},
		{name: "sha without image", line: "rescue.sha256=" + sum, wantErr: "without rescue.image="},
		{name: "delta", line: "rescue.action=restore rescue.image=/x.img rescue.target=auto rescue.delta=1", check: func(t *testing.T, c *Config) {
			if !c.Delta || c.Summary()["delta"] != true {
				t.Errorf("delta %v, summary %v", c.Delta, c.Summary())
			}
		}},
		{name: "delta off", line: "rescue.action=restore rescue.image=/x.img rescue.target=auto rescue.delta=0", check: func(t *testing.T, c *Config) {
			if _, ok := c.Summary()["delta"]; c.Delta || ok {
				t.Errorf("delta %v, summary %v", c.Delta, c.Summary())
			}
		}},
		{name: "delta yes", line: "rescue.image=/x.img rescue.delta=yes", wantErr: "want 1"},
		{name: "delta without image", line: "rescue.delta=1", wantErr: "without rescue.image="},
		{name: "http_conns", line: "rescue.action=restore rescue.image=http://h/x.img rescue.target=auto rescue.http_conns=8", check: func(t *testing.T, c *Config) {
			if c.HTTPConns != 8 || c.Summary()["http_conns"] != 8 {
				t.Errorf("http_conns %d, summary %v", c.HTTPConns, c.Summary())
			}
		}},
		{name: "http_conns 0", line: "rescue.image=http://h/x.img rescue.http_conns=0", wantErr: "want 1 to 8"},
		{name: "http_conns 9", line: "rescue.image=http://h/x.img rescue.http_conns=9", wantErr: "want 1 to 8"},
		{name: "http_conns word", line: "rescue.image=http://h/x.img rescue.http_conns=four", wantErr: "want 1 to 8"},
		{name: "http_conns without image", line: "rescue.http_conns=2", wantErr: "without rescue.image="},
		{name: "bmap without image", line: "rescue.bmap=/x.bmap", wantErr: "without rescue.image="},
		{name: "bmap relative", line: "rescue.image=/x rescue.bmap=x.bmap", wantErr: "absolute path"},
		{name: "relative image", line: "rescue.image=esxi.img", wantErr: "absolute path"},
		{name: "ftp image", line: "rescue.image=ftp://h/x", wantErr: "only http(s)://, smb://"},
		{name: "share URLs and credentials", line: "rescue.action=restore,fix,verify rescue.image=smb://CORP;admin@nas/images/esxi.img.zst rescue.bmap=s3://b/esxi.img.bmap?endpoint=http://10.0.0.9:9000 rescue.ref=sftp://root@10.0.0.5/srv/esxi.gpt.json rescue.cred=/nas.cred rescue.target=auto",
			check: func(t *testing.T, c *Config) {
				if c.Image != "smb://CORP;admin@nas/images/esxi.img.zst" || c.Cred != "/nas.cred" || !strings.HasPrefix(c.Bmap, "s3://") || !strings.HasPrefix(c.Ref, "sftp://") {
					t.Errorf("got %+v", c)
				}
				if c.IP == nil || c.IP.Mode != netup.ModeDHCP {
					t.Errorf("a share URL should default to ip=dhcp, got %+v", c.IP)
				}
			}},
		{name: "password in a share URL is not echoed", line: "rescue.image=smb://u:Hunter2-secret@nas/share/x rescue.bmap=relative", wantErr: "absolute path"},
		{name: "cred URL", line: "rescue.image=nfs://filer/vol/x.img rescue.cred=http://10.0.0.1/c", check: func(t *testing.T, c *Config) {
			if c.Cred != "http://10.0.0.1/c" {
				t.Errorf("Cred %q", c.Cred)
			}
		}},
		{name: "cred share URL", line: "rescue.image=nfs://filer/vol/x.img rescue.cred=smb://h/s/c", wantErr: "cannot be a share URL"},
		{name: "cred relative", line: "rescue.image=nfs://filer/vol/x.img rescue.cred=nas.cred", wantErr: "absolute path"},
		{name: "share URL without file", line: "rescue.image=smb://nas/share/", wantErr: "no file name"},
		{name: "URL without host", line: "rescue.image=http:///x", wantErr: "without a host"},
		{name: "ref image without image", line: "rescue.action=fix rescue.target=auto rescue.ref=image", wantErr: "rescue.ref=image needs rescue.image="},
		{name: "bad done", line: "rescue.done=halt", wantErr: "want reboot, poweroff, shell or boot"},
		{name: "boot conflicts with done", line: "rescue.action=boot rescue.target=auto rescue.done=poweroff", wantErr: "conflicts"},
		{name: "done=boot without target", line: "rescue.done=boot", wantErr: "needs rescue.target="},
		{name: "report not a URL", line: "rescue.report=/tmp/r.json", wantErr: "want an http:// or https:// URL"},
		{name: "bad testpause", line: "rescue.testpause=later", wantErr: "unknown pause point"},
		{name: "bad ip", line: "ip=10.0.0.1", wantErr: "unknown mode"},
		{name: "ip=off with URL", line: "ip=off rescue.action=restore rescue.target=auto rescue.image=http://h/i", wantErr: "network is needed"},
		{name: "bad BOOTIF", line: "BOOTIF=02-52-54-00-12-34-56", wantErr: "not Ethernet"},
		{name: "job and syslog", line: "rescue.job=http://10.0.0.5/jobs/${mac} rescue.syslog=tcp://logs.example:6514", check: func(t *testing.T, c *Config) {
			if c.Job != "http://10.0.0.5/jobs/${mac}" || c.Syslog != "tcp://logs.example:6514" || c.IP == nil || c.IP.Mode != netup.ModeDHCP {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "job redacted in the summary", line: "rescue.job=https://u:secret@s3.example/b/${serial}?X-Amz-Signature=abc", check: func(t *testing.T, c *Config) {
			if s := c.Summary()["job"].(string); strings.Contains(s, "secret") || strings.Contains(s, "abc") {
				t.Errorf("summary shows a secret: %s", s)
			}
		}},
		{name: "job not a URL", line: "rescue.job=/jobs/x", wantErr: "want an http:// or https:// URL"},
		{name: "job unknown variable", line: "rescue.job=http://h/${uuid}", wantErr: "unknown ${...}"},
		{name: "job without host", line: "rescue.job=http:///${mac}", wantErr: "without a host"},
		{name: "syslog bad scheme", line: "rescue.syslog=tls://h", wantErr: "want udp:// or tcp://"},
		{name: "syslog bad port", line: "rescue.syslog=h:99999", wantErr: "bad port"},
		{name: "syslog empty host", line: "rescue.syslog=udp://:514", wantErr: "want HOST[:PORT]"},
		{name: "multicast restore", line: "rescue.action=restore,fix,verify rescue.image=udpcast://eth0?port=9000 rescue.sha256=" + sum +
			" rescue.target=/dev/vda ip=10.0.0.5:::255.255.255.0:rescue:eth0:off", check: func(t *testing.T, c *Config) {
			if !c.Multicast() || c.Ref != RefESXi || !c.NeedsNetwork() || c.IP == nil || c.IP.Mode != netup.ModeStatic {
				t.Errorf("got %+v (ip %+v)", c, c.IP)
			}
		}},
		{name: "multicast needs a sha256", line: "rescue.action=restore rescue.image=udpcast://eth0 rescue.target=/dev/vda", wantErr: "needs the image's SHA-256"},
		{name: "multicast with a manifest", line: "rescue.action=restore rescue.image=udpcast:// rescue.manifest=/x.sha256 rescue.target=/dev/vda", check: func(t *testing.T, c *Config) {
			if c.Manifest != "/x.sha256" || c.IP == nil {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "multicast ref=image", line: "rescue.action=restore rescue.image=udpcast:// rescue.sha256=" + sum + " rescue.ref=image rescue.target=/dev/vda", wantErr: "cannot be read ahead"},
		{name: "multicast bad port", line: "rescue.image=udpcast://eth0?port=9001 rescue.sha256=" + sum, wantErr: "even"},
		{name: "multicast signed needs a manifest", line: "rescue.image=udpcast:// rescue.sha256=" + sum + " rescue.pubkey=/k.pub", wantErr: "needs rescue.manifest= or rescue.bmap="},
		{name: "pubkey base64", line: "rescue.action=restore rescue.image=http://h/i.zst rescue.target=auto rescue.pubkey=" + pubkey, check: func(t *testing.T, c *Config) {
			if c.PubKey != pubkey || c.Summary()["pubkey"] != pubkey {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "pubkey URL refused", line: "rescue.image=http://h/i.zst rescue.pubkey=http://h/k.pub", wantErr: "not a URL"},
		{name: "pubkey garbage", line: "rescue.image=http://h/i.zst rescue.pubkey=RWQnotakey", wantErr: "not a minisign public key"},
		{name: "pubkey without image", line: "rescue.pubkey=" + pubkey, wantErr: "without rescue.image="},
		{name: "ssh file", line: "rescue.ssh=/etc/rescue/authorized_keys", check: func(t *testing.T, c *Config) {
			if c.SSH != "/etc/rescue/authorized_keys" || c.IP == nil || c.IP.Mode != netup.ModeDHCP || !c.Interactive() {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "ssh relative", line: "rescue.ssh=keys", wantErr: "absolute path"},
		{name: "backup", line: "rescue.action=backup rescue.source=auto rescue.dest=smb://u@nas/img/esx1.img.zst", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c.Actions, []Action{ActionBackup}) || c.BackupSource != "auto" || c.Compress != "zstd" ||
				c.Overwrite || c.IP == nil || c.WritesDisk() || c.Target != "" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "backup first, then restore", line: "rescue.action=restore,backup rescue.source=/dev/sda rescue.dest=nfs://nas/x/a.img rescue.compress=none rescue.overwrite=yes rescue.image=http://h/i.zst rescue.target=/dev/sda", check: func(t *testing.T, c *Config) {
			if !reflect.DeepEqual(c.Actions, []Action{ActionBackup, ActionRestore}) || c.Compress != "none" || !c.Overwrite || c.BackupDest != "nfs://nas/x/a.img" {
				t.Errorf("got %+v", c)
			}
		}},
		{name: "backup without source", line: "rescue.action=backup rescue.dest=smb://nas/img/a.zst", wantErr: "needs rescue.source="},
		{name: "backup source not a device", line: "rescue.action=backup rescue.source=sda rescue.dest=smb://nas/img/a.zst", wantErr: "want a device under /dev/"},
		{name: "backup without dest", line: "rescue.action=backup rescue.source=auto", wantErr: "needs rescue.dest="},
		{name: "backup to http", line: "rescue.action=backup rescue.source=auto rescue.dest=http://h/a.zst", wantErr: "want an smb://"},
		{name: "backup to a local path", line: "rescue.action=backup rescue.source=auto rescue.dest=/tmp/a.zst", wantErr: "want an smb://"},
		{name: "backup bad compress", line: "rescue.action=backup rescue.source=auto rescue.dest=s3://b/a.zst rescue.compress=xz", wantErr: "want zstd, gzip or none"},
		{name: "backup bad overwrite", line: "rescue.action=backup rescue.source=auto rescue.dest=s3://b/a.zst rescue.overwrite=1", wantErr: "want yes or no"},
		{name: "dest without backup", line: "rescue.action=fix rescue.target=auto rescue.dest=s3://b/a.zst", wantErr: "without rescue.action=backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := Split(tc.line, "/proc/cmdline", false)
			args = append(args, Split(tc.stick, "stick", true)...)
			c, err := Parse(args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse(%q) = %+v, %v; want error containing %q", tc.line, c, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.line, err)
			}
			tc.check(t, c)
		})
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "cmdline")
	stick := filepath.Join(dir, "rescue.txt")
	os.WriteFile(proc, []byte("BOOT_IMAGE=/vmlinuz console=ttyS0 rescue.action=shell\n"), 0o644)
	os.WriteFile(stick, []byte("# edit me\r\nrescue.action=fix,verify\r\nrescue.target=auto\r\n"), 0o644)
	args, err := Read(proc, stick)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(args)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Actions, []Action{ActionFix, ActionVerify}) || c.Target != "auto" || c.Source["rescue.target"] != stick {
		t.Errorf("got %+v", c)
	}
	if _, err := Read(filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("Read of a missing file succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("rescue.action=restore,fix rescue.image=http://h/x rescue.target=auto ip=dhcp BOOTIF=01-52-54-00-12-34-56")
	f.Add(`rescue.action="fix verify" rescue.target=/dev/sda rescue.done=boot`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(Split(s, "fuzz", true))
		if err != nil {
			return
		}
		if len(c.Actions) == 0 {
			t.Fatalf("Parse(%q): no actions", s)
		}
		if c.WritesDisk() && c.Target == "" {
			t.Fatalf("Parse(%q): disk action without target", s)
		}
		if c.Has(ActionRestore) && c.Image == "" {
			t.Fatalf("Parse(%q): restore without image", s)
		}
	})
}

func TestSyslogAddr(t *testing.T) {
	for _, c := range []struct{ in, network, addr string }{
		{"logs", "udp", "logs:514"},
		{"logs:1514", "udp", "logs:1514"},
		{"udp://10.0.0.1", "udp", "10.0.0.1:514"},
		{"tcp://[::1]:6514", "tcp", "[::1]:6514"},
		{"tcp://logs/", "tcp", "logs:514"},
	} {
		n, a, err := SyslogAddr(c.in)
		if err != nil || n != c.network || a != c.addr {
			t.Errorf("SyslogAddr(%q) = %q %q %v, want %q %q", c.in, n, a, err, c.network, c.addr)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"http://h/jobs/x", "http://h/jobs/x"},
		{"http://u:pw@h/x", "http://u:xxxxx@h/x"},
		{"https://b.s3/x?X-Amz-Signature=s", "https://b.s3/x?redacted"},
	} {
		if got := RedactURL(c.in); got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
