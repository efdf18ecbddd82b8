package qemutests

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// privateL2 is an Ethernet segment of the test's own: a vde_switch (a
// child process with a socket in a temp dir) that the VMs join with QEMU's
// -netdev vde, and a network namespace made for the test whose tap device
// vde_plug2tap attaches to the switch, so that udp-sender on the host side
// sits on the same segment. Nothing of it touches the host's interfaces.
type privateL2 struct {
	sock, ns, tap, addr string
}

// child starts a program that lives until the test ends (killed by pid).
func child(t *testing.T, name string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe() // vde_switch's console: it must not see EOF
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		stdin.Close()
	})
	return cmd, out
}

func newPrivateL2(t *testing.T) *privateL2 {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the private L2 (network namespace, tap) needs root")
	}
	for _, p := range []string{"vde_switch", "vde_plug2tap", "udp-sender", "ip"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is needed (Debian packages vde2, udpcast, iproute2; ./build.sh deps installs them)", p)
		}
	}
	dir, err := os.MkdirTemp("", "vde-") // short: a unix socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l := &privateL2{sock: filepath.Join(dir, "sw"), ns: fmt.Sprintf("mcast%d", os.Getpid()), tap: "tap0", addr: "10.203.0.1"}
	child(t, "vde_switch", "-s", l.sock)
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(l.sock, "ctl")); err == nil {
			break
		}
		if i > 100 {
			t.Fatal("vde_switch did not create its socket")
		}
		time.Sleep(50 * time.Millisecond)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", l.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns).Run() })
	run("ip", "-n", l.ns, "tuntap", "add", "dev", l.tap, "mode", "tap")
	run("ip", "-n", l.ns, "addr", "add", l.addr+"/24", "brd", "+", "dev", l.tap)
	run("ip", "-n", l.ns, "link", "set", l.tap, "up")
	child(t, "ip", "netns", "exec", l.ns, "vde_plug2tap", "-s", l.sock, l.tap)
	return l
}

// nic is the QEMU arguments of a NIC on the segment.
func (l *privateL2) nic(mac string) []string {
	return []string{"-netdev", "vde,id=m0,sock=" + qemuEscape(l.sock), "-device", "virtio-net-pci,netdev=m0,romfile=,mac=" + mac}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.ReplaceAll(s.b.String(), "\r", "\n")
}

var _ io.Writer = (*syncBuffer)(nil)

// multicastImage is the incident in small: an ESXi 5.0-style table
// (slots 1,5,6,7,8,2,3 in disk order, slot 4 empty, ESXi's type GUIDs;
// LBAs scaled down so that three TCG guests restore it within the test's
// budget, random data in every partition) as "Windows" left it on a bigger
// disk (esximg damage -mode windows: entries compacted, CRCs valid), and
// its zstd copy, which is what the sender multicasts. ref is the original's
// layout file (gptdiff -save), the reference the rescue fixes against
// (rescue.ref=): a scaled table is no layout esxi.Recognize knows.
type multicastImage struct {
	zst, sha string
	orig     *RawGPT           // the original's GPT: what "fixed" means
	digest   map[string]string // partition data of the damaged image (what was multicast), by LBA range
	ref      []byte
}

func makeMulticastImage(t *testing.T, tl *Tools) *multicastImage {
	t.Helper()
	dir := t.TempDir()
	const (
		vmkDiag = "9D275380-40AD-11DB-BF97-000C2911D1B8"
		vmfs    = "AA31E02A-400F-11DB-9590-000C2911D1B8"
	)
	raw := gpttest.SgdiskImage(t, dir, 32<<20, []gpttest.Part{
		{Slot: 1, First: 64, Last: 8191, Type: "EF00"},
		{Slot: 5, First: 8224, Last: 14000, Type: "0700"},
		{Slot: 6, First: 14032, Last: 20000, Type: "0700"},
		{Slot: 7, First: 20032, Last: 24000, Type: vmkDiag},
		{Slot: 8, First: 24032, Last: 30000, Type: "0700"},
		{Slot: 2, First: 30032, Last: 36000, Type: "0700"},
		{Slot: 3, First: 36032, Last: 60000, Type: vmfs},
	})
	f, err := os.OpenFile(raw, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(14, 4))
	buf := make([]byte, 512<<10)
	for _, lba := range []int64{64, 8224, 14032, 20032, 24032, 30032, 36032, 58000} {
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, lba*512); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	m := &multicastImage{}
	if m.orig, err = ReadRawGPT(raw, 512); err != nil {
		t.Fatal(err)
	}
	refPath := filepath.Join(dir, "esxi-layout.json")
	if _, err := tl.Run("gptdiff", "-save", refPath, raw); err != nil {
		t.Fatal(err)
	}
	if m.ref, err = os.ReadFile(refPath); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "esxi-windows.img")
	if _, err := tl.Run("esximg", "damage", "-mode", "windows", "-size", "40M", raw, damaged); err != nil {
		t.Fatal(err)
	}
	g, err := ReadRawGPT(damaged, 512)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(g.Primary.Array, m.orig.Primary.Array) {
		t.Fatal("esximg damage -mode windows did not change the entry array: the test would prove nothing")
	}
	m.zst = damaged + ".zst"
	if m.sha, err = CompressZstd(damaged, m.zst); err != nil {
		t.Fatal(err)
	}
	if m.digest, err = PartitionDigests(damaged, 512); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMulticast is issue 14, item 4: one stock udp-sender and two rescue
// VMs on the private L2 restore the same zstd image — the incident's
// compacted ESXi-style table (makeMulticastImage) — by udpcast multicast
// (rescue.image=udpcast://eth0, rescue.sha256= required) onto bigger disks,
// and fix and verify them (rescue.action=restore,fix,verify against the
// original's layout). Both disks are checked from the host: both GPT
// copies slot for slot equal to the original's with the backup at the new
// end, sgdisk -v, partition data. A third VM started after the
// transmission began fails cleanly: RESCUE: FAILED in the restore step
// naming udpcast, no fix or verify step run, its disk untouched.
func TestMulticast(t *testing.T) {
	a := artifacts(t)
	missingRescue(t)
	tl := tools(t, "esximg", "gptdiff")
	l := newPrivateL2(t)
	t.Parallel()
	ri := makeMulticastImage(t, tl)
	dir := t.TempDir()
	const refPath = "etc/rescue-test/esxi-layout.json"
	initrd := filepath.Join(dir, "initramfs")
	if err := InitramfsWithFiles(a.Initramfs, initrd, map[string][]byte{refPath: ri.ref}); err != nil {
		t.Fatal(err)
	}
	sender, sout := child(t, "ip", "netns", "exec", l.ns, "udp-sender", "--file", ri.zst, "--interface", l.tap,
		"--portbase", "9000", "--min-receivers", "2", "--nopointopoint", "--nokbd")

	vm := func(name, mac, ip, timeouts string, disk string) VM {
		return VM{
			Name: t.Name() + "-" + name, Kernel: a.Kernel, Initrd: initrd,
			Cmdline: KernelCmdline("ip="+ip+":::255.255.255.0:"+name+":eth0:off", "rescue.action=restore,fix,verify",
				"rescue.image=udpcast://eth0?port=9000&"+timeouts, "rescue.sha256="+ri.sha,
				"rescue.ref=/"+refPath, "rescue.target=/dev/vda", "rescue.done=poweroff"),
			Disks:   []Disk{{Path: disk}},
			Extra:   l.nic(mac),
			Timeout: Scaled(3 * time.Minute),
		}
	}
	var targets []string
	type result struct {
		name string
		err  error
		r    *Running
	}
	results := make(chan result, 3)
	for i, name := range []string{"rx1", "rx2"} {
		target := filepath.Join(dir, name+".img")
		if err := BlankDisk(target, 64<<20); err != nil {
			t.Fatal(err)
		}
		targets = append(targets, target)
		v := vm(name, fmt.Sprintf("52:54:00:4d:43:%02x", i+1), fmt.Sprintf("10.203.0.%d", 11+i), "start-timeout=240&receive-timeout=60", target)
		go func() {
			r, _, err := HandsOff(t.Context(), v, nil)
			results <- result{name, err, r}
		}()
	}

	// The late receiver: booted only once the transfer has started.
	late := filepath.Join(dir, "late.img")
	if err := BlankDisk(late, 64<<20); err != nil {
		t.Fatal(err)
	}
	lateBefore, err := FileDigest(late)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(Scaled(3 * time.Minute))
	for !strings.Contains(sout.String(), "Starting transfer") {
		if time.Now().After(deadline) {
			t.Fatalf("udp-sender never started the transfer:\n%s", sout.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("udp-sender started the transfer; booting the late receiver")
	lr, err := Start(t.Context(), vm("late", "52:54:00:4d:43:09", "10.203.0.19", "start-timeout=15&receive-timeout=10", late))
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Stop()

	for range 2 {
		res := <-results
		if res.r != nil {
			defer res.r.Stop()
		}
		if res.err != nil {
			t.Errorf("%s: %v", res.name, res.err)
		}
	}
	if err := sender.Wait(); err != nil || !strings.Contains(sout.String(), "Transfer complete") {
		t.Errorf("udp-sender: %v\n%s", err, lastLines(sout.String(), 15))
	}
	for _, target := range targets {
		if err := CheckFixedGPT(target, 512, ri.orig.Primary); err != nil {
			t.Errorf("%s: not fixed slot for slot: %v", filepath.Base(target), err)
		}
		if err := SgdiskVerify(target); err != nil {
			t.Errorf("%s: %v", filepath.Base(target), err)
		}
		after, err := PartitionDigests(target, 512)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(target), err)
			continue
		}
		if err := CompareDigests(ri.digest, after); err != nil {
			t.Errorf("%s: restored partitions differ from the image's: %v", filepath.Base(target), err)
		}
	}

	// The late receiver, asserted whatever happened above: a clear failure
	// in the restore step, nothing after it, its disk as it was.
	m, err := lr.Expect(MarkFailed, 0, MarkDone, regexp.MustCompile(`RESCUE: STEP (fix|verify) \(`))
	if err != nil {
		t.Fatalf("the late receiver: %v", err)
	}
	t.Logf("the late receiver failed as it should: %s", m[0])
	if !regexp.MustCompile(`^restore: .*(udpcast|udp-receiver|SHA-256|incomplete)`).MatchString(m[1]) {
		t.Errorf("the late receiver's failure is not a restore failure saying what went wrong: %s", m[0])
	}
	lr.Stop()
	if after, err := FileDigest(late); err != nil || after != lateBefore {
		t.Errorf("the late receiver's disk changed (%v)", err)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
