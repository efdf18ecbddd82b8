package coldplug

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestFnmatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"virtio:d00000002v*", "virtio:d00000002v00001AF4", true},
		{"virtio:d00000002v*", "virtio:d00000001v00001AF4", false},
		{"pci:v00008086d000010D3sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00", true},
		{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", true},
		{"pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i01", false},
		{"scsi:t-0x00*", "scsi:t-0x00", true},
		{"scsi:t-0x0[05]*", "scsi:t-0x05", true},
		{"scsi:t-0x0[!05]*", "scsi:t-0x05", false},
		{"scsi:t-0x0[^05]*", "scsi:t-0x07", true},
		{"a[0-9]b", "a5b", true},
		{"a[0-9]b", "axb", false},
		{"a[]]b", "a]b", true},
		{"a[a-]b", "a-b", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"a*", "a/b/c", true}, // flags 0: '*' crosses '/'
		{`a\*b`, "a*b", true},
		{`a\*b`, "axb", false},
		{"a[b", "a[b", true}, // unclosed class is literal
		{"a[b", "axb", false},
		{"*x*y*", "aaxbbycc", true},
		{"*x*y", "aaxbbycc", false},
		{"", "", true},
		{"*", "", true},
		{"?", "", false},
		{"usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*", "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00", true},
		{"dmi*:svnQEMU:*", "dmi:bvnSeaBIOS:svnQEMU:pnStandardPC", true},
	} {
		if got := Fnmatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Fnmatch(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// FuzzFnmatch cross-checks against path.Match where both define the same
// language: ASCII, no '/', no '\', no '!' (path.Match only knows '^').
func FuzzFnmatch(f *testing.F) {
	f.Add("pci:v*d*sv*sd*bc01sc08i02*", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02")
	f.Add("a[0-9^]?*b", "a5xxb")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if strings.ContainsAny(pattern+name, "/\\!") {
			return
		}
		for _, c := range []byte(pattern + name) {
			if c >= 0x80 {
				return // fnmatch in the C locale is byte-wise, path.Match rune-wise
			}
		}
		want, err := path.Match(pattern, name)
		if err != nil {
			return
		}
		if strings.Contains(pattern, "[]") || strings.Contains(pattern, "[^]") || strings.Contains(pattern, "-]") || strings.Contains(pattern, "[-") || strings.Contains(pattern, "^-") {
			return // class edge cases where POSIX and Go differ
		}
		if got := Fnmatch(pattern, name); got != want {
			t.Fatalf("Fnmatch(%q, %q) = %v, path.Match says %v", pattern, name, got, want)
		}
	})
}

func TestParseAliasesErrors(t *testing.T) {
	for _, in := range []string{"alias onlytwo\n", "blias a b\n", "alias a b c\n"} {
		if _, err := ParseAliases(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseAliases(%q) = %v, want a line 1 error", in, err)
		}
	}
	a, err := ParseAliases(strings.NewReader("# Aliases extracted from modules themselves.\n\nalias virtio:d00000002v* virtio_blk\n"))
	if err != nil || a.Len() != 1 {
		t.Fatalf("ParseAliases = %v, %v", a, err)
	}
}

// Modaliases of devices QEMU emulates and servers carry.
var qemuModaliases = map[string][]string{
	"virtio:d00000002v00001AF4":                             {"virtio_blk"},
	"virtio:d00000001v00001AF4":                             {"virtio_net"},
	"virtio:d00000008v00001AF4":                             {"virtio_scsi"},
	"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00": {"virtio_pci"},
	"pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00": {"e1000"},
	"pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00": {"e1000e"},
	"pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01": {"ahci"},
	"pci:v00008086d00007010sv00001AF4sd00001100bc01sc01i80": {"ata_piix", "ata_generic"},
	"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02": {"nvme"},
	"pci:v000015ADd000007B0sv000015ADsd000007B0bc02sc00i00": {"vmxnet3"},
	"pci:v00001000d0000005Bsv00001000sd00009265bc01sc04i00": {"megaraid_sas"},
	"pci:v00008086d00001521sv00008086sd00000001bc02sc00i00": {"igb"},
	"pci:v00008086d00001572sv00008086sd00000000bc02sc00i00": {"i40e"},
	"pci:v000014E4d00001657sv0000103Csd000022BEbc02sc00i00": {"tg3"},
	"pci:v0000103Cd00003239sv0000103Csd00003351bc01sc04i00": {"hpsa"},
	"pci:v00009005d0000028Fsv00009005sd00001100bc01sc04i00": {"smartpqi"},
	"pci:v00001000d00000097sv00001000sd00003090bc01sc07i00": {"mpt3sas"},
	"scsi:t-0x00": {"sd_mod"},
	"usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00":     {"usb_storage"},
	"pci:v00008086d00000000sv00000000sd00000000bcFFscFFiFF": nil,
}

func TestLookupRealAliases(t *testing.T) {
	root, rel := kernelTree(t)
	dir := filepath.Join(root, "lib/modules", rel)
	ix, err := LoadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := ix.Aliases
	if a.Len() < 10000 {
		t.Fatalf("only %d aliases in the Debian kernel's modules.alias", a.Len())
	}
	all := map[string]bool{}
	for m, want := range qemuModaliases {
		got := a.Lookup(m)
		for _, w := range want {
			if !contains(got, w) {
				t.Errorf("Lookup(%s) = %v, want it to contain %s", m, got, w)
			}
		}
		if want == nil && len(got) != 0 {
			t.Errorf("Lookup(%s) = %v, want none", m, got)
		}
		all[m] = true
	}
	// And every device of the machine running the test.
	host, _ := Modaliases("/sys")
	for _, m := range host {
		all[m] = true
	}
	// Cross-check with kmod's own resolver: modprobe -R prints the modules
	// an alias resolves to (fnmatch over modules.alias.bin).
	modprobe, err := exec.LookPath("modprobe")
	if err != nil {
		modprobe = "/usr/sbin/modprobe"
	}
	if _, err := os.Stat(modprobe); err != nil {
		t.Fatalf("modprobe (Debian package kmod) is needed for the cross-check")
	}
	checked := 0
	for m := range all {
		out, _ := exec.Command(modprobe, "-d", root, "-S", rel, "-R", m).Output()
		// Builtin drivers need no loading; modprobe -R names them too.
		var want []string
		for _, w := range dedupe(strings.Fields(string(out))) {
			if !ix.Builtin(w) {
				want = append(want, w)
			}
		}
		got := a.Lookup(m)
		sort.Strings(want)
		sort.Strings(got)
		if len(want) == 0 && len(got) == 0 {
			checked++
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Lookup(%s) = %v, modprobe -R says %v", m, got, want)
		}
		checked++
	}
	t.Logf("%d aliases; %d modaliases (%d from this machine) agree with modprobe -R", a.Len(), checked, len(host))
}

func TestKernelLoaderDependencies(t *testing.T) {
	root, rel := kernelTree(t)
	ix, err := LoadIndex(filepath.Join(root, "lib/modules", rel))
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"virtio_blk", "megaraid_sas", "nvme", "vfat", "nls_iso8859_1", "nls_cp437", "nls_ascii", "mlx5_core", "ext4", "sd_mod", "crc32c_intel"} {
		var got []string
		l, err := NewKernelLoader(ix, "")
		if err != nil {
			t.Fatal(err)
		}
		l.DryRun = func(p string) { got = append(got, p) }
		if err := l.Load(mod); err != nil {
			t.Fatalf("Load(%s): %v", mod, err)
		}
		out, err := exec.Command("modprobe", "-d", root, "-S", rel, "--show-depends", mod).Output()
		if err != nil {
			t.Fatalf("modprobe --show-depends %s: %v", mod, err)
		}
		var want []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "insmod" {
				want = append(want, f[1])
			}
		}
		want = dedupe(want)
		sort.Strings(got)
		sort.Strings(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Load(%s) would load %v, modprobe --show-depends says %v", mod, got, want)
		}
	}
	if _, err := ix.Plan("no_such_module"); err == nil {
		t.Error("Plan of an unknown module succeeded")
	}
	if p, err := ix.Plan("rtc_cmos"); err != nil || len(p) != 0 {
		t.Errorf("Plan(builtin rtc_cmos) = %v, %v; want nothing to load", p, err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func dedupe(in []string) []string {
	var out []string
	for _, s := range in {
		if !contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// busLoader stands in for the kernel at the hardware boundary: loading a
// bus driver makes its child devices appear in the fake sysfs, as
// virtio_pci does for virtio devices.
type busLoader struct {
	sys      string
	children map[string][]string // module -> modaliases it brings up
	loaded   []string
	fail     map[string]bool
}

func (b *busLoader) Load(m string) error {
	if b.fail[m] {
		return os.ErrInvalid
	}
	b.loaded = append(b.loaded, m)
	for i, c := range b.children[m] {
		d := filepath.Join(b.sys, "bus", m, "devices", "child"+string(rune('0'+i)))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "modalias"), []byte(c+"\n"), 0o444)
	}
	return nil
}

func TestRunFollowsNewDevices(t *testing.T) {
	sys := t.TempDir()
	dev := func(p, alias string) {
		os.MkdirAll(filepath.Join(sys, p), 0o755)
		os.WriteFile(filepath.Join(sys, p, "modalias"), []byte(alias+"\n"), 0o444)
	}
	dev("bus/pci/devices/0000:00:03.0", "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00")
	dev("bus/pci/devices/0000:00:04.0", "pci:v00008086d000010D3sv00001AF4sd00001100bc02sc00i00")
	dev("bus/platform/devices/serial8250", "platform:serial8250")
	aliases, err := ParseAliases(strings.NewReader(`alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e_extra
alias scsi:t-0x00* sd_mod
`))
	if err != nil {
		t.Fatal(err)
	}
	l := &busLoader{sys: sys, children: map[string][]string{
		"virtio_pci": {"virtio:d00000002v00001AF4"},
		"virtio_blk": {"scsi:t-0x00"}, // not realistic, but a third generation
	}, fail: map[string]bool{"e1000e_extra": true}}
	res, err := Run(context.Background(), Options{Sys: sys, Aliases: aliases, Loader: l,
		Extra: AlwaysWanted, Settle: 300 * time.Millisecond, Poll: 20 * time.Millisecond, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"e1000e", "virtio_pci", "virtio_blk", "sd_mod", "vfat", "nls_cp437", "nls_iso8859_1", "nls_ascii", "nls_utf8"}
	sort.Strings(want)
	got := append([]string(nil), res.Loaded...)
	sort.Strings(got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("loaded %v, want %v", res.Loaded, want)
	}
	if res.Devices != 5 || res.Unmatched != 1 || res.Failed["e1000e_extra"] == "" || res.TimedOut {
		t.Errorf("result %+v", res)
	}
	if res.Rounds < 3 {
		t.Errorf("%d rounds, want at least 3 (pci, virtio, scsi)", res.Rounds)
	}
	t.Log(res.Summary())
}

func TestRunTimeLimit(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "bus"), 0o755)
	aliases, _ := ParseAliases(strings.NewReader("alias x:* grow\n"))
	// Devices that keep appearing forever must not hang the boot.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			d := filepath.Join(sys, "bus/x/devices", fmt.Sprint("d", i))
			os.MkdirAll(d, 0o755)
			os.WriteFile(filepath.Join(d, "modalias"), []byte(fmt.Sprint("x:", i)), 0o444)
		}
	}()
	defer func() { close(stop); <-done }()
	l := &busLoader{sys: t.TempDir()}
	start := time.Now()
	res, err := Run(context.Background(), Options{Sys: sys, Aliases: aliases, Loader: l,
		Timeout: 500 * time.Millisecond, Settle: 200 * time.Millisecond, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v with a 500ms limit", d)
	}
	if !res.TimedOut || !reflect.DeepEqual(l.loaded, []string{"grow"}) {
		t.Errorf("result %+v, loaded %v; want TimedOut and grow loaded once", res, l.loaded)
	}
}

func TestModaliasesMissingRoot(t *testing.T) {
	if _, err := Modaliases(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("Modaliases of a missing directory succeeded")
	}
}

// TestModaliasesLikeFullWalk cross-checks the bus-based scan with a walk
// of every modalias file under /sys/devices on the machine running the
// test.
func TestModaliasesLikeFullWalk(t *testing.T) {
	want := map[string]bool{}
	filepath.WalkDir("/sys/devices", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "modalias" && d.Type().IsRegular() {
			if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
				want[strings.TrimSpace(string(b))] = true
			}
		}
		return nil
	})
	got, err := Modaliases("/sys")
	if err != nil {
		t.Skipf("no sysfs here: %v", err)
	}
	for _, m := range got {
		if !want[m] {
			t.Errorf("Modaliases found %q, the full walk did not", m)
		}
		delete(want, m)
	}
	for m := range want {
		t.Errorf("the full walk found %q, Modaliases did not", m)
	}
	t.Logf("%d modaliases", len(got))
}
