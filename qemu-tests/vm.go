// Package qemutests boots the rescue system built by ./build.sh (out/) in
// QEMU against ESXi-style disks and checks, from the host, what it did.
//
// This file is the harness: one VM boot with a hard timeout, its serial
// console captured to out/qemu-tests/<name>.log, and waiting for console
// markers. The scenarios are in the _test.go files; the demo command
// (qemu-tests/demo) uses the same helpers.
package qemutests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/esxi-rescue/rescue/esxi/stubkernel"
)

// QEMUBinary is the emulator the tests run.
const QEMUBinary = "qemu-system-x86_64"

// Disk is a raw disk image attached to a VM.
type Disk struct {
	Path string
	// Bus says how the disk is attached: "virtio" (default, /dev/vda...),
	// "virtio-4k" (virtio-blk with 4096-byte logical sectors), "ahci"
	// (SATA, /dev/sda...), "scsi" (virtio-scsi, /dev/sda...) or "usb"
	// (usb-storage, for a boot stick); and, for the controller matrix,
	// any key of HBAs (megasas, mptsas1068, pvscsi, nvme, ide, sd, ...).
	Bus string
	// ReadOnly attaches the image read-only (snapshot=on would hide writes).
	ReadOnly bool
	// BootIndex (virtio disks) puts the disk in the firmware's boot order
	// (OVMF: 1 first); 0 leaves it out.
	BootIndex int
}

// Net is a QEMU user-mode network: isolated (restrict=on), with optional
// forwards of guest TCP connections to host programs and the built-in TFTP
// server. Nothing the guest sends ever leaves QEMU except through Forwards.
type Net struct {
	// TFTPDir and BootFile enable QEMU's TFTP server and the DHCP boot file
	// option (PXE).
	TFTPDir, BootFile string
	// Forwards maps a guest address "10.0.2.100:80" to a host loopback
	// address "127.0.0.1:PORT". Each guest connection is relayed by a fresh
	// copy of the running binary (see RelayMain), so any number of
	// connections work, one after the other or at once.
	Forwards map[string]string
	// HostForwards maps a loopback port on the host ("127.0.0.1:PORT") to
	// a guest TCP port (22): QEMU's hostfwd, for the SSH test. Only
	// loopback addresses are accepted.
	HostForwards map[string]int
	// Model is the NIC; default virtio-net-pci.
	Model string
	// BootIndex puts the NIC in the firmware's boot order (see Disk); 0
	// leaves it to -boot.
	BootIndex int
	// ROM is the option ROM for the NIC (iPXE). "" means QEMU's default
	// (iPXE) when BootFile is set, and no ROM at all otherwise.
	ROM string
}

// VM describes one boot.
type VM struct {
	Name    string // log file name under LogDir, e.g. the test name
	Kernel  string // direct kernel boot when set
	Initrd  string
	Cmdline string
	BIOS    string // firmware file (OVMF); "" = SeaBIOS
	Boot    string // -boot order, e.g. "n" for network only
	Disks   []Disk
	Net     *Net // nil: no NIC at all
	MemMB   int  // default 1024
	Timeout time.Duration
	// OnLine, when set, is called for every console line (the demo prints
	// some of them). It must not block.
	OnLine func(line string)
	Extra  []string // more QEMU arguments
	// Keyboard, when set, connects the serial port's input to Running.Type
	// (the keys a person types on the serial console); else the guest reads
	// nothing there.
	Keyboard bool
}

// Running is a started VM.
type Running struct {
	vm      VM
	cmd     *exec.Cmd
	logPath string
	start   time.Time

	mu     sync.Mutex
	out    strings.Builder // the whole console, \r removed
	seen   int             // offset in out up to which Expect consumed
	change chan struct{}   // closed and replaced whenever out grows or QEMU exits
	exited bool
	err    error // QEMU's exit status once exited

	deadline *time.Timer
	release  func()
	keys     io.WriteCloser // the serial port's input (VM.Keyboard)
}

// Type sends keys to the guest's serial port, as typed on a serial
// console ("\r" is Enter, "\x1b" Esc). It needs VM.Keyboard.
func (r *Running) Type(keys string) error {
	if r.keys == nil {
		return errors.New("qemu: the VM has no keyboard on its serial port (VM.Keyboard)")
	}
	_, err := io.WriteString(r.keys, keys)
	return err
}

// vmSlots bounds how many VMs run at once (QEMU_TESTS_VMS; default one
// more than the CPUs, at most 4): a single-CPU guest keeps one host core
// busy under TCG, and more VMs than cores only make each boot slower.
var vmSlots = func() chan struct{} {
	n, err := strconv.Atoi(os.Getenv("QEMU_TESTS_VMS"))
	if err != nil || n < 1 {
		n = min(runtime.NumCPU()+1, 4)
	}
	return make(chan struct{}, n)
}()

// Accel returns the QEMU accelerator to use: "kvm" when KVM really works
// here (a probe boot, see kvmWorks) and we are not in CI (CI has no KVM, so
// what CI runs is what we test locally too), unless QEMU_TESTS_ACCEL says
// "tcg" or "kvm"; else "tcg".
func Accel() string {
	switch os.Getenv("QEMU_TESTS_ACCEL") {
	case "tcg":
		return "tcg"
	case "kvm":
		return "kvm"
	}
	if os.Getenv("CI") != "" {
		return "tcg"
	}
	kvmOnce.Do(func() { kvmOK = kvmWorks() })
	if kvmOK {
		return "kvm"
	}
	return "tcg"
}

var (
	kvmOnce sync.Once
	kvmOK   bool
)

// kvmWorks boots the stand-in ESXi kernel under KVM with the host's CPU
// model: /dev/kvm opening is not enough (nested setups refuse host MSRs).
func kvmWorks() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	dir, err := os.MkdirTemp("", "kvm-probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	k := filepath.Join(dir, "stub")
	if err := os.WriteFile(k, stubkernel.Kernel(), 0o644); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, QEMUBinary, "-accel", "kvm", "-cpu", "host", "-m", "64", "-no-reboot",
		"-nographic", "-monitor", "none", "-serial", "stdio", "-nodefaults", "-vga", "none",
		"-kernel", k, "-append", "bootUUID=probe").CombinedOutput()
	return err == nil && strings.Contains(string(out), stubkernel.Marker+"probe")
}

// Slowdown scales timeouts: TCG is several times slower than KVM, and a
// loaded CI machine slower still. QEMU_TESTS_SLOWDOWN overrides it.
func Slowdown() float64 {
	if f, err := strconv.ParseFloat(os.Getenv("QEMU_TESTS_SLOWDOWN"), 64); err == nil && f > 0 {
		return f
	}
	if Accel() == "kvm" {
		return 1
	}
	return 3
}

// Scaled returns d for KVM, multiplied by Slowdown otherwise.
func Scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * Slowdown())
}

// Args returns the QEMU command line for vm (without the binary).
func (vm *VM) Args() ([]string, error) {
	mem := vm.MemMB
	if mem == 0 {
		mem = 1024
	}
	accel := Accel()
	args := []string{
		"-accel", accel,
		"-m", strconv.Itoa(mem),
		"-smp", "1",
		"-no-reboot",
		"-nographic", "-monitor", "none", "-serial", "stdio",
		"-nodefaults", "-vga", "none",
	}
	// The host's CPU under KVM; under TCG the emulator's full model, which
	// (like every real server) has RDRAND: without a hardware random source
	// the guest kernel's CRNG takes minutes to initialise under TCG, and
	// anything needing random numbers (the DHCP client's transaction IDs)
	// stalls.
	if accel == "kvm" {
		args = append(args, "-cpu", "host")
	} else {
		args = append(args, "-cpu", "max")
	}
	if vm.BIOS != "" {
		args = append(args, "-bios", vm.BIOS)
	}
	if vm.Kernel != "" {
		args = append(args, "-kernel", vm.Kernel)
		if vm.Initrd != "" {
			args = append(args, "-initrd", vm.Initrd)
		}
		args = append(args, "-append", vm.Cmdline)
	} else if vm.Cmdline != "" {
		return nil, errors.New("qemu: a kernel command line needs a kernel (direct boot)")
	}
	if vm.Boot != "" {
		args = append(args, "-boot", vm.Boot)
	}
	// Controllers first: QEMU creates devices in command-line order.
	buses := map[string]bool{}
	for _, d := range vm.Disks {
		buses[d.Bus] = true
	}
	if buses["ahci"] {
		args = append(args, "-device", "ahci,id=ahci0")
	}
	if buses["scsi"] {
		args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
	}
	if buses["usb"] || buses["usb-data"] {
		args = append(args, "-device", "qemu-xhci,id=xhci0")
	}
	for _, b := range hbaOrder {
		if buses[b] && HBAs[b].Controller != "" {
			args = append(args, "-device", HBAs[b].Controller+",id="+b+"0")
		}
	}
	ahciPort := 0
	for i, d := range vm.Disks {
		id := fmt.Sprintf("d%d", i)
		drive := "file=" + qemuEscape(d.Path) + ",format=raw,if=none,id=" + id + ",cache=unsafe"
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive)
		switch d.Bus {
		case "", "virtio":
			dev := "virtio-blk-pci,drive=" + id
			if d.BootIndex > 0 {
				dev += ",bootindex=" + strconv.Itoa(d.BootIndex)
			}
			args = append(args, "-device", dev)
		case "virtio-4k":
			args = append(args, "-device", "virtio-blk-pci,drive="+id+",logical_block_size=4096,physical_block_size=4096")
		case "ahci":
			args = append(args, "-device", "ide-hd,bus=ahci0."+strconv.Itoa(ahciPort)+",drive="+id)
			ahciPort++
		case "scsi":
			args = append(args, "-device", "scsi-hd,bus=scsi0.0,drive="+id)
		case "usb":
			args = append(args, "-device", "usb-storage,bus=xhci0.0,drive="+id+",bootindex=1")
		case "usb-data":
			args = append(args, "-device", "usb-storage,bus=xhci0.0,drive="+id)
		default:
			if h, ok := HBAs[d.Bus]; ok {
				args = append(args, "-device", strings.NewReplacer("@ID@", id, "@BUS@", d.Bus+"0").Replace(h.Disk))
				continue
			}
			return nil, fmt.Errorf("qemu: unknown disk bus %q", d.Bus)
		}
	}
	if vm.Net == nil {
		args = append(args, "-nic", "none")
	} else {
		n := vm.Net
		netdev := "user,id=n0,restrict=on"
		if n.TFTPDir != "" {
			netdev += ",tftp=" + qemuEscape(n.TFTPDir)
		}
		if n.BootFile != "" {
			netdev += ",bootfile=" + qemuEscape(n.BootFile)
		}
		for guest, host := range n.Forwards {
			relay, err := relayCommand(host)
			if err != nil {
				return nil, err
			}
			netdev += ",guestfwd=tcp:" + guest + "-cmd:" + qemuEscape(relay)
		}
		for host, port := range n.HostForwards {
			if !strings.HasPrefix(host, "127.0.0.1:") {
				return nil, fmt.Errorf("qemu: hostfwd only from a loopback address, not %s", host)
			}
			netdev += fmt.Sprintf(",hostfwd=tcp:%s-:%d", host, port)
		}
		model := n.Model
		if model == "" {
			model = "virtio-net-pci"
		}
		dev := model + ",netdev=n0"
		if n.BootIndex > 0 {
			dev += ",bootindex=" + strconv.Itoa(n.BootIndex)
		}
		switch {
		case n.ROM != "":
			dev += ",romfile=" + qemuEscape(n.ROM)
		case n.BootFile == "":
			dev += ",romfile=" // no option ROM: nothing boots from this NIC
		}
		args = append(args, "-netdev", netdev, "-device", dev)
	}
	return append(args, vm.Extra...), nil
}

// qemuEscape doubles commas, QEMU's option-value escape.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start boots vm. It waits for a free VM slot first (see QEMU_TESTS_VMS);
// the hard timeout (vm.Timeout, default Scaled(2m)) counts from the boot.
// The console goes to LogDir()/<vm.Name>.log.
func Start(ctx context.Context, vm VM) (*Running, error) {
	args, err := vm.Args()
	if err != nil {
		return nil, err
	}
	if vm.Timeout == 0 {
		vm.Timeout = Scaled(2 * time.Minute)
	}
	logPath := filepath.Join(LogDir(), sanitize(vm.Name)+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, fmt.Errorf("qemu: log dir: %w", err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	select {
	case vmSlots <- struct{}{}:
	case <-ctx.Done():
		logFile.Close()
		return nil, ctx.Err()
	}
	var once sync.Once
	release := func() { once.Do(func() { <-vmSlots }) }

	fmt.Fprintf(logFile, "# %s %s\n", QEMUBinary, shellQuote(args))
	cmd := exec.Command(QEMUBinary, args...)
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		release()
		logFile.Close()
		return nil, err
	}
	cmd.Stderr = cmd.Stdout // QEMU's own errors belong in the log too
	r := &Running{vm: vm, cmd: cmd, logPath: logPath, change: make(chan struct{}), release: release}
	if vm.Keyboard {
		if r.keys, err = cmd.StdinPipe(); err != nil {
			release()
			logFile.Close()
			return nil, err
		}
	}
	if err := cmd.Start(); err != nil {
		release()
		logFile.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", QEMUBinary, err)
	}
	r.start = time.Now()
	r.deadline = time.AfterFunc(vm.Timeout, func() { r.Kill() })
	go r.pump(stdout, logFile)
	return r, nil
}

// pump copies the console into the log and the buffer until QEMU exits.
func (r *Running) pump(stdout io.Reader, logFile *os.File) {
	br := bufio.NewReader(stdout)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			clean := strings.ReplaceAll(line, "\r", "")
			logFile.WriteString(clean)
			r.mu.Lock()
			r.out.WriteString(clean)
			r.notifyLocked()
			r.mu.Unlock()
			if r.vm.OnLine != nil && strings.HasSuffix(clean, "\n") {
				r.vm.OnLine(strings.TrimSuffix(clean, "\n"))
			}
		}
		if err != nil {
			break
		}
	}
	werr := r.cmd.Wait()
	r.deadline.Stop()
	r.release()
	fmt.Fprintf(logFile, "\n# qemu exited after %s: %v\n", time.Since(r.start).Round(time.Millisecond), werr)
	logFile.Close()
	r.mu.Lock()
	r.exited, r.err = true, werr
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *Running) notifyLocked() {
	close(r.change)
	r.change = make(chan struct{})
}

// Kill stops QEMU at once (a power cut for the guest). Safe to call twice.
func (r *Running) Kill() {
	if r.cmd.Process != nil {
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Output returns the whole console so far.
func (r *Running) Output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// Seen is the offset in Output up to which Expect has consumed (the end
// of its last match): what the guest printed after that marker is
// Output()[Seen():]. len(Output()) after an Expect is not: more may have
// arrived by then, in the same read from the serial port even.
func (r *Running) Seen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// LogPath is where the console is kept.
func (r *Running) LogPath() string { return r.logPath }

// Elapsed is the time since the boot started.
func (r *Running) Elapsed() time.Duration { return time.Since(r.start) }

// Tail returns the last n lines of the console.
func (r *Running) Tail(n int) string { return tailLines(r.Output(), n) }

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Console markers of the rescue system (docs/CONTRACTS.md) and of trouble.
var (
	MarkDone   = regexp.MustCompile(`RESCUE: DONE ok`)
	MarkFailed = regexp.MustCompile(`RESCUE: FAILED ?(.*)`)
	MarkPanic  = regexp.MustCompile(`Kernel panic - not syncing.*`)
)

// ExpectError is returned by Expect when the wanted marker did not come.
type ExpectError struct {
	Want    string
	Reason  string // "timeout", "QEMU exited: ...", or the failure marker seen
	Log     string
	Markers string // the last marker lines (RESCUE:, ESXIBOOT-TEST:, ...)
	Tail    string // the last console lines
	Elapsed time.Duration
}

func (e *ExpectError) Error() string {
	m := ""
	if e.Markers != "" {
		m = "\n--- last markers ---\n" + e.Markers
	}
	return fmt.Sprintf("waiting for %q: %s after %s%s\n--- last console lines (full log: %s) ---\n%s\n---",
		e.Want, e.Reason, e.Elapsed.Round(time.Second), m, e.Log, e.Tail)
}

// markerLine matches console lines worth repeating in a failure message.
var markerLine = regexp.MustCompile(`RESCUE:|ESXIBOOT-TEST:|ESXI-STUB|GPTFIX|Kernel panic|BUG:|Oops`)

// markers returns the last n console lines that match markerLine.
func markers(out string, n int) string {
	var m []string
	for _, l := range strings.Split(out, "\n") {
		if markerLine.MatchString(l) {
			m = append(m, l)
		}
	}
	if len(m) > n {
		m = m[len(m)-n:]
	}
	return strings.Join(m, "\n")
}

// Expect waits until a console line matches want and returns the match
// (submatches included). It fails at once when a line matches one of fail
// (plus a kernel panic always), when QEMU exits, or after timeout (0: until
// the VM's hard timeout). Each Expect continues after the previous match.
func (r *Running) Expect(want *regexp.Regexp, timeout time.Duration, fail ...*regexp.Regexp) ([]string, error) {
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	fail = append(fail, MarkPanic)
	for {
		r.mu.Lock()
		all := r.out.String()
		// Only complete lines, so that a marker is never matched half-printed.
		end := strings.LastIndexByte(all, '\n') + 1
		if r.exited {
			end = len(all)
		}
		var done bool
		var res []string
		var reason string
		if end > r.seen {
			chunk := all[r.seen:end]
			wl := want.FindStringSubmatchIndex(chunk)
			first := len(chunk) + 1
			if wl != nil {
				first = wl[0]
			}
			for _, f := range fail {
				if fl := f.FindStringIndex(chunk); fl != nil && fl[0] < first {
					first, reason = fl[0], "saw "+strconv.Quote(lineAt(chunk, fl[0]))
				}
			}
			if reason != "" {
				done = true
			} else if wl != nil {
				for i := 0; i < len(wl); i += 2 {
					if wl[i] >= 0 {
						res = append(res, chunk[wl[i]:wl[i+1]])
					} else {
						res = append(res, "")
					}
				}
				r.seen += wl[1]
				r.mu.Unlock()
				return res, nil
			}
		}
		if !done && r.exited {
			done, reason = true, fmt.Sprintf("QEMU exited (%v)", r.err)
		}
		ch := r.change
		r.mu.Unlock()
		if done {
			return nil, r.expectErr(want, reason)
		}
		select {
		case <-ch:
		case <-timer:
			return nil, r.expectErr(want, "timeout")
		}
	}
}

func lineAt(s string, i int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	end := strings.IndexByte(s[i:], '\n')
	if end < 0 {
		return s[start:]
	}
	return s[start : i+end]
}

func (r *Running) expectErr(want *regexp.Regexp, reason string) error {
	if reason == "timeout" || strings.HasPrefix(reason, "QEMU exited") && r.Elapsed() >= r.vm.Timeout {
		reason = fmt.Sprintf("timeout (hard limit %s for this boot, accel %s)", r.vm.Timeout.Round(time.Second), Accel())
	}
	out := r.Output()
	return &ExpectError{Want: want.String(), Reason: reason, Log: r.logPath, Markers: markers(out, 15), Tail: tailLines(out, 40), Elapsed: r.Elapsed()}
}

// Wait waits for QEMU to exit by itself (the guest powered off, or rebooted:
// -no-reboot turns that into an exit) within timeout, and kills it otherwise.
func (r *Running) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		exited, err, ch := r.exited, r.err, r.change
		r.mu.Unlock()
		if exited {
			switch {
			case err != nil && r.Elapsed() >= r.vm.Timeout:
				return r.expectErr(regexp.MustCompile("QEMU exit"), "timeout")
			case err != nil:
				return r.expectErr(regexp.MustCompile("QEMU exit"), fmt.Sprintf("QEMU failed (%v)", err))
			}
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			r.Kill()
			return r.expectErr(regexp.MustCompile("QEMU exit"), "VM did not power off")
		}
	}
}

// Stop kills QEMU and waits until it is gone (so the disk images are
// closed before the host inspects them).
func (r *Running) Stop() {
	r.Kill()
	for {
		r.mu.Lock()
		exited, ch := r.exited, r.change
		r.mu.Unlock()
		if exited {
			return
		}
		<-ch
	}
}

func sanitize(name string) string {
	return strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
			return c
		}
		return '_'
	}, name)
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\;&|<>()*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

// Runnable reports why QEMU cannot run here, or nil when it can: the binary
// must exist and start (a -version run).
func Runnable() error {
	path, err := exec.LookPath(QEMUBinary)
	if err != nil {
		return fmt.Errorf("%s is not installed (Debian package qemu-system-x86): %w", QEMUBinary, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -version failed: %v: %s", path, err, out)
	}
	return nil
}
