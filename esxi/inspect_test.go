package esxi

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/esxi/stubkernel"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/internal/gpttest"

	ubesxi "github.com/u-root/u-root/pkg/boot/esxi"
	"github.com/u-root/u-root/pkg/boot/multiboot"
)

func inspectFile(t *testing.T, path string) *BootReport {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	rep, err := Inspect(f, st.Size(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestInspect checks the verdicts on originals and on each kind of damage.
func TestInspect(t *testing.T) {
	type want struct {
		bootable, ok bool
		chosen       int    // entry the loader boots
		bankOf       int    // original entry whose bank that is (its UUID)
		verdict      string // must appear in the verdict
	}
	originals := map[string]CreateOptions{}
	images := map[string]string{}
	for name, opt := range map[string]CreateOptions{
		"5.0":       {Version: "5.0", Size: 8 << 30, Seed: 21},
		"5.0-empty": {Version: "5.0", Size: 8 << 30, Seed: 22, AltBank: "empty"},
		"6.7":       {Version: "6.7", Size: 16 << 30, Seed: 23},
		"6.7-4Kn":   {Version: "6.7", Size: 16 << 30, SectorSize: 4096, Seed: 24},
		"7.0":       {Version: "7.0", Size: 8 << 30, Seed: 25},
	} {
		originals[name] = opt
		images[name] = createImage(t, opt)
	}
	for _, c := range []struct {
		image, mode string
		want        want
	}{
		{"5.0", "", want{true, true, 5, 5, "bootable: ESXi boots bank"}},
		{"5.0-empty", "", want{true, true, 5, 5, "store at entry 8"}},
		{"6.7", "", want{true, true, 5, 5, "store at entry 8"}},
		{"6.7-4Kn", "", want{true, true, 5, 5, "bootable"}},
		{"7.0", "", want{true, true, 5, 5, "osdata at entry 7"}},
		// The incident: ESXi boots the alternate (older) bank, or nothing.
		{"5.0", "windows", want{true, false, 5, 6, "is at entry 4, not where ESXi 5/6 looks"}},
		{"5.0-empty", "windows", want{false, false, 0, 0, "is at entry 4, not where ESXi 5/6 looks"}},
		{"6.7", "windows", want{true, false, 5, 6, "ESXi mounts entry 8 as store, but it holds vmkDiagnostic; the store is at entry 7"}},
		{"6.7-4Kn", "windows", want{true, false, 5, 6, "not where ESXi 5/6 looks"}},
		// 7.0's loader scans: it boots the newest bank from entry 2, but
		// ESXi then looks for OSDATA at entry 7.
		{"7.0", "windows", want{true, false, 2, 5, "ESXi mounts entry 7 as osdata, but it is empty; the osdata is at entry 4"}},
		{"5.0", "sorted", want{false, false, 0, 0, "not where ESXi 5/6 looks"}},
		{"5.0", "stale-backup", want{true, true, 5, 5, "bootable"}},
		{"5.0", "backup-crc", want{true, true, 5, 5, "bootable"}},
		{"5.0", "primary-crc", want{false, false, 0, 0, "primary GPT header CRC mismatch"}},
		{"5.0", "primary-zeroed", want{false, false, 0, 0, "ESXi's boot loader reads only the primary GPT"}},
		{"5.0", "shrunk", want{true, false, 5, 5, "ESXi mounts entry 3 as datastore"}},
	} {
		t.Run(c.image+"-"+c.mode, func(t *testing.T) {
			img := images[c.image]
			if c.mode != "" {
				d := filepath.Join(t.TempDir(), "d.img")
				if err := Damage(d, c.mode, DamageOptions{Source: img}); err != nil {
					t.Fatal(err)
				}
				img = d
			}
			rep := inspectFile(t, img)
			if rep.Bootable != c.want.bootable || rep.OK != c.want.ok || rep.Chosen != c.want.chosen {
				t.Errorf("bootable=%v ok=%v chosen=%d, want %v %v %d\n%s", rep.Bootable, rep.OK, rep.Chosen, c.want.bootable, c.want.ok, c.want.chosen, rep)
			}
			if c.want.chosen != 0 {
				for _, b := range rep.Banks {
					if b.Slot == rep.Chosen && b.UUID != originals[c.image].BankUUID(c.want.bankOf) {
						t.Errorf("boots bank %s, want the original entry %d's %s", b.UUID, c.want.bankOf, originals[c.image].BankUUID(c.want.bankOf))
					}
				}
			}
			if !strings.Contains(rep.Verdict, c.want.verdict) {
				t.Errorf("verdict %q lacks %q", rep.Verdict, c.want.verdict)
			}
		})
	}
}

// TestInspectRepaired repairs a windows-damaged 5.0 disk with the project's
// gpt package and esxi.Recognize (what gptfix -esxi does) and expects
// Inspect to name the right bank again.
func TestInspectRepaired(t *testing.T) {
	opt := CreateOptions{Version: "5.0", Size: 8 << 30, Seed: 31}
	orig := createImage(t, opt)
	dmg := filepath.Join(t.TempDir(), "d.img")
	if err := Damage(dmg, "windows", DamageOptions{Source: orig}); err != nil {
		t.Fatal(err)
	}
	if rep := inspectFile(t, dmg); rep.OK {
		t.Fatalf("damaged disk inspected OK:\n%s", rep)
	}
	tbl, err := gpt.ReadFile(dmg, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Recognize(tbl)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := gpt.PlanFix(tbl, gpt.FixOptions{SlotMap: m.SlotMap})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := gpt.OpenDevice(dmg, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Apply(dev, filepath.Join(t.TempDir(), "undo")); err != nil {
		t.Fatal(err)
	}
	dev.Close()
	rep := inspectFile(t, dmg)
	if !rep.OK || rep.Chosen != 5 || rep.Banks[0].UUID != opt.BankUUID(5) {
		t.Errorf("repaired disk: ok=%v chosen=%d\n%s", rep.OK, rep.Chosen, rep)
	}
}

// TestBankAgreesWithURoot hands each bank's boot.cfg to u-root's own ESXi
// config parser (pkg/boot/esxi, what esxiboot uses) and the kernel to its
// multiboot probe: the command line starts with the kernel name and
// kernelopt, every module opens, and b.b00 is a multiboot kernel.
func TestBankAgreesWithURoot(t *testing.T) {
	opt := CreateOptions{Version: "6.7", Size: 8 << 30, Seed: 41}
	img := createImage(t, opt)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, _ := Layout(opt.Version, opt.Size, 512)
	st := &readerStorage{r: f, size: opt.Size}
	for _, p := range parts {
		if p.Role != RoleBootBank && p.Role != RoleAltBank {
			continue
		}
		fs, err := readFAT(st, int64(p.First)*512, p.Size())
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		ents, err := fs.ReadDir(".")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			data, err := readAll(fs, "/"+e.Name())
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644)
		}
		mi, err := ubesxi.LoadConfig(filepath.Join(dir, "boot.cfg"))
		if err != nil {
			t.Fatalf("bank %d: u-root LoadConfig: %v", p.Slot, err)
		}
		if !strings.HasPrefix(mi.Cmdline, "b.b00 no-auto-partition") {
			t.Errorf("bank %d: u-root command line %q", p.Slot, mi.Cmdline)
		}
		if len(mi.Modules) != len(BankModules) {
			t.Errorf("bank %d: u-root sees %d modules, want %d", p.Slot, len(mi.Modules), len(BankModules))
		}
		for i, m := range mi.Modules {
			b, err := io.ReadAll(io.NewSectionReader(m.Module, 0, 1<<20))
			if err != nil || !strings.HasPrefix(string(b), "ESXI-STUB module "+BankModules[i]) {
				t.Errorf("bank %d: module %q: %v", p.Slot, m.Cmdline, err)
			}
		}
		if err := multiboot.Probe(mi.Kernel); err != nil {
			t.Errorf("bank %d: u-root multiboot.Probe(b.b00): %v", p.Slot, err)
		}
		k, _ := io.ReadAll(io.NewSectionReader(mi.Kernel, 0, 1<<20))
		if string(k) != string(stubkernel.Kernel()) {
			t.Errorf("bank %d: b.b00 is not the stub kernel", p.Slot)
		}
	}
}

// TestInspectBadInput: truncated, garbage and absurd headers give a
// verdict or an error, never a panic.
func TestInspectBadInput(t *testing.T) {
	opt := CreateOptions{Version: "5.0", Size: 2 << 30, Seed: 51}
	img := createImage(t, opt)
	head := make([]byte, 64<<10)
	f, _ := os.Open(img)
	f.ReadAt(head, 0)
	f.Close()
	for name, mutate := range map[string]func([]byte) int64{
		"truncated":       func(b []byte) int64 { return 40 * 512 },
		"too small":       func(b []byte) int64 { return 1000 },
		"absurd count":    func(b []byte) int64 { b[512+0x50], b[512+0x53] = 0xFF, 0x7F; return 2 << 30 },
		"array past end":  func(b []byte) int64 { b[512+0x48+6] = 0x7F; return 2 << 30 },
		"zero entry size": func(b []byte) int64 { b[512+0x54] = 0; return 2 << 30 },
	} {
		b := append([]byte(nil), head...)
		size := mutate(b)
		r := &sliceReader{b: b, size: size}
		rep, err := Inspect(r, size, 0)
		if err == nil && rep.Bootable {
			t.Errorf("%s: bootable", name)
		}
	}
}

type sliceReader struct {
	b    []byte
	size int64
}

func (s *sliceReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := 0
	if off < int64(len(s.b)) {
		n = copy(p, s.b[off:])
	}
	for i := n; i < len(p) && off+int64(i) < s.size; i++ {
		p[i] = 0
		n++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func FuzzInspect(f *testing.F) {
	b := make([]byte, 40*512)
	copy(b[512:], gptSignature)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &sliceReader{b: data, size: int64(len(data))}
		Inspect(r, int64(len(data)), 0)
	})
}

// TestInspectLoaders: the loader generations differ on a compacted disk,
// and Inspect follows the one the newest bank's build installed.
func TestInspectLoaders(t *testing.T) {
	mk := func(build string, seed int64) (string, CreateOptions) {
		opt := CreateOptions{Version: "6.7", Size: 16 << 30, Seed: seed, Build: build}
		img := createImage(t, opt)
		d := filepath.Join(t.TempDir(), "d.img")
		if err := Damage(d, "windows", DamageOptions{Source: img}); err != nil {
			t.Fatal(err)
		}
		return d, opt
	}
	// 6.7 GA (build 8169922): the loader looks at 5 and 6 only and boots
	// the older bank now in slot 5; a 6.7u2 loader would boot slot 4.
	img, opt := mk("", 31)
	rep := inspectFile(t, img)
	if len(rep.Loaders) != len(LoaderGens) || !rep.Loaders[0].Applies || rep.Loaders[0].Chosen != 5 || rep.Loaders[1].Chosen != 4 || !rep.LoadersDiffer() {
		t.Fatalf("loaders %+v\n%s", rep.Loaders, rep)
	}
	if rep.Loaders[0].UUID != opt.BankUUID(6) || rep.Loaders[1].UUID != opt.BankUUID(5) {
		t.Errorf("6.7u1 boots %s (want the old bank %s), 6.7u2 %s (want %s)", rep.Loaders[0].UUID, opt.BankUUID(6), rep.Loaders[1].UUID, opt.BankUUID(5))
	}
	if rep.Chosen != 5 || rep.OK || !strings.Contains(rep.String(), "ESXi 6.7u2 and 6.7u3 would boot entry 4") {
		t.Errorf("chosen %d ok %v\n%s", rep.Chosen, rep.OK, rep)
	}
	// 6.7 U2 (build 13006603): its loader scans and boots the newest bank
	// from slot 4; ESXi still misses store/locker at 8.
	img, opt = mk("6.7.0-13006603", 32)
	rep = inspectFile(t, img)
	if !rep.Loaders[1].Applies || rep.Chosen != 4 || !rep.Bootable || rep.OK || !strings.Contains(rep.Verdict, "ESXi mounts entry 8 as store") {
		t.Errorf("6.7u2: chosen %d bootable %v ok %v\n%s", rep.Chosen, rep.Bootable, rep.OK, rep)
	}
	// 7.0 U2 (build 17630552): a bank of another type is not a bank; 7.0
	// U1 would still boot it.
	opt7 := CreateOptions{Version: "7.0", Size: 40 << 30, Seed: 33, Build: "7.0.2-17630552"}
	img = createImage(t, opt7)
	gpttest.EditArrays(t, img, 512, func(arr []byte) {
		copy(arr[4*128:4*128+16], gpttest.GUID(t, "0FC63DAF-8483-4772-8E79-3D69D8477DE4")) // entry 5: Linux filesystem
	})
	rep = inspectFile(t, img)
	if !rep.Loaders[3].Applies || rep.Loaders[3].Chosen != 6 || rep.Loaders[2].Chosen != 5 || rep.OK || !strings.Contains(rep.Verdict, "does not accept for a boot bank") {
		t.Errorf("7.0u2 type rule: loaders %+v ok %v\n%s", rep.Loaders, rep.OK, rep)
	}
}

func TestLoaderGenOf(t *testing.T) {
	for build, want := range map[string]int{
		"5.0.0-1311175": 0, "6.5.0-4564106": 0, "6.7.0-8169922": 0, "6.7.0-10302608": 0,
		"6.7.0-13006603": 1, "6.7.0-20497097": 1, "7.0.0-15843807": 2, "7.0.1-17325551": 2,
		"7.0.2-17630552": 3, "7.0.3-24585291": 3, "8.0.0-20513097": 3, "": -1, "junk": -1, "4.1.0-260247": -1,
	} {
		if got := LoaderGenOf(build); got != want {
			t.Errorf("LoaderGenOf(%q) = %d, want %d", build, got, want)
		}
	}
}
