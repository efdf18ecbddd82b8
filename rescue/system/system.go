// Package system is the rescue flow's Machine on a real machine: it loads
// drivers (coldplug), lists disks and NICs, brings the network up, loads
// the reference table, chooses the target, and runs the disk tools —
// imaging.Copy for a restore, gpt.PlanFix/Apply for a fix, gpt.Compare
// and esxi.Recognize for verification, u-root's esxiboot for booting.
//
// This file is over 500 lines because it holds the Machine's steps, in
// the order the flow runs them (Drivers to BootCheck), as methods sharing
// System's state; what they use lives beside it (image.go: an image's
// table, backup.go: rescue.source and the backup, cred.go, reread.go).
package system

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/remote/cred"
	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/coldplug"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"github.com/esxi-rescue/rescue/rescue/netup"
	"github.com/esxi-rescue/rescue/rescue/target"
	ucmdline "github.com/u-root/u-root/pkg/cmdline"
	"golang.org/x/sys/unix"
)

// Console is where the system logs.
type Console interface {
	io.Writer
	Printf(format string, args ...any)
}

// System implements flow.Machine.
type System struct {
	Con     Console
	Sys     inventory.Sys // "/" normally
	TmpDir  string        // the rescue tmpfs: undo files, downloads (default /tmp)
	Release string        // kernel release; "" = uname -r
	// ExtraModules are loaded after coldplug (modules_load=; u-root's
	// init loads them too, already loaded ones are skipped).
	ExtraModules []string

	// VerifyCopy reads a restored disk back and compares its hash with
	// the image's (default true).
	VerifyCopy bool
	// Bounds of the waits.
	DriverTimeout, DiskTimeout time.Duration
	// Keep, when set, is the rescue stick: undo files go into the run's
	// directory there, durably, before the disk is written (keep.go).
	Keep *keep.Stick
	// OnProgress receives the restore's progress (live status).
	OnProgress func(imaging.Progress)
	// BaseArgs are the command line's arguments, to which rescue.job=
	// adds the job's (job.go).
	BaseArgs []cmdline.Arg

	undos []UndoFile
	net   *netup.Result

	plug     *coldplug.Plug // drivers for late devices, until the disks step ends
	disks    []inventory.Disk
	medium   map[string]bool
	imageTab *gpt.Table // the image's table (restore, rescue.ref=image)
	ref      *gpt.Table // the reference for fix/verify; nil = ESXi recognition
	refDesc  string
	cred     *cred.Cred // rescue.cred=, loaded once
}

// New returns a System logging to con.
func New(con Console) *System {
	return &System{Con: con, Sys: inventory.Sys{Root: "/"}, TmpDir: "/tmp", VerifyCopy: true,
		DriverTimeout: 30 * time.Second, DiskTimeout: 15 * time.Second, medium: map[string]bool{}}
}

func (s *System) release() string {
	if s.Release != "" {
		return s.Release
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Drivers loads the modules the hardware asks for (coldplug), then the
// always wanted ones and ExtraModules.
func (s *System) Drivers(ctx context.Context) (any, error) {
	extra := s.ExtraModules
	dir := coldplug.ModuleDir(s.Sys.Root, s.release())
	ix, err := coldplug.LoadIndex(dir)
	if err != nil {
		return nil, fmt.Errorf("no module index for kernel %s (drivers built in only): %w", s.release(), err)
	}
	l, err := coldplug.NewKernelLoader(ix, filepath.Join(s.Sys.Root, "proc/modules"))
	if err != nil {
		return nil, err
	}
	l.Params = ucmdline.FlagsForModule
	// Listen for uevents before the first scan, so that a device the
	// loaded drivers report late (disks behind a SAS HBA or USB) still gets
	// its driver while the disks step waits.
	src, uerr := coldplug.OpenUevents()
	if uerr != nil {
		s.Con.Printf("drivers: %v; new devices are found by polling sysfs", uerr)
		src = nil
	}
	p, err := coldplug.Start(ctx, coldplug.Options{
		Sys: filepath.Join(s.Sys.Root, "sys"), Aliases: ix.Aliases, Loader: l,
		Extra: append(append([]string(nil), coldplug.AlwaysWanted...), extra...), Timeout: s.DriverTimeout,
		Poll: 250 * time.Millisecond, Log: s.Con.Printf,
	}, src)
	res := p.Result()
	s.Con.Printf("drivers: %s", res.Summary())
	if len(res.Loaded) > 0 {
		s.Con.Printf("drivers: loaded %s", strings.Join(res.Loaded, " "))
	}
	if err != nil {
		return res, err
	}
	s.plug = p
	return res, nil
}

// stopHotplug ends the loading of drivers for late devices (after the
// disks step) and logs what it loaded.
func (s *System) stopHotplug() {
	if s.plug == nil {
		return
	}
	res := s.plug.Stop()
	s.plug = nil
	if len(res.Late) > 0 {
		s.Con.Printf("drivers: loaded for devices that appeared later: %s", strings.Join(res.Late, " "))
	}
}

// DiskInfo is a disk as the report shows it.
type DiskInfo struct {
	inventory.Disk
	GPT string `json:"gpt"` // one-line summary of its table
}

// Disks waits for the disks to settle, then lists disks and NICs.
func (s *System) Disks(ctx context.Context) (any, error) {
	disks, err := s.Sys.WaitDisks(ctx, 1, time.Second, s.DiskTimeout)
	s.stopHotplug()
	if err != nil {
		return nil, err
	}
	s.disks = disks
	var out struct {
		Disks    []DiskInfo          `json:"disks"`
		NICs     []inventory.NIC     `json:"nics"`
		Hardware *inventory.Hardware `json:"hardware,omitempty"`
	}
	// The hardware report: every storage/network controller, its driver or
	// why it has none, firmware asked for and missing.
	if hw, err := HardwareReport(s.Sys.Root, s.release()); err != nil {
		s.Con.Printf("hw: %v", err)
	} else {
		for _, l := range hw.Lines() {
			s.Con.Printf("hw: %s", l)
		}
		out.Hardware = hw
	}
	if len(disks) == 0 {
		s.Con.Printf("disks: none found after %s (is the storage driver in the initramfs? see dmesg)", s.DiskTimeout)
	}
	for _, d := range disks {
		info := DiskInfo{Disk: d, GPT: Summary(d)}
		s.Con.Printf("disk: %s — %s", d.Describe(), info.GPT)
		out.Disks = append(out.Disks, info)
	}
	nics, err := s.Sys.NICs()
	if err == nil {
		for _, n := range nics {
			s.Con.Printf("nic: %s %s link %s carrier %v driver %s", n.Name, n.MAC, n.Link, n.Carrier, n.Driver)
		}
		out.NICs = nics
	}
	return out, nil
}

// HardwareReport is the hardware report of the machine under root: PCI
// controllers named from the image's pci.ids, the modules of the image
// that would claim them (modules.alias of release), and missing firmware
// from the kernel log. Names or aliases that cannot be read leave those
// parts out; only an unreadable sysfs is an error.
func HardwareReport(root, release string) (*inventory.Hardware, error) {
	ids, _ := inventory.LoadPCIIDs(root)
	var claim func(string) []string
	if a, err := coldplug.LoadAliases(filepath.Join(coldplug.ModuleDir(root, release), "modules.alias")); err == nil {
		claim = a.Lookup
	}
	klog := ""
	if root == "/" {
		klog, _ = inventory.KernelLog()
	}
	return inventory.Sys{Root: root}.HardwareReport(ids, claim, klog)
}

// Summary describes a disk's partition table in one line (read-only).
func Summary(d inventory.Disk) string {
	f := target.Examine(d, nil, nil)
	switch {
	case f.ReadErr != "":
		return "unreadable: " + f.ReadErr
	case f.Blank:
		return "blank"
	case !f.HasGPT:
		return "no GPT"
	case f.RescueMedium:
		return "GPT, the rescue stick"
	}
	t, err := gpt.ReadFile(d.Path, d.SectorSize)
	if err != nil {
		return "unreadable: " + err.Error()
	}
	used := 0
	for _, sl := range t.Slots() {
		if sl.Used() {
			used++
		}
	}
	s := fmt.Sprintf("GPT, %d partitions", used)
	if len(t.Problems) > 0 {
		s += fmt.Sprintf(", %d problems (run gptdiff/gptfix)", len(t.Problems))
	}
	if m, err := esxi.Recognize(t); err == nil {
		s += ", ESXi " + m.Family + " layout"
		if m.NeedsMove() {
			s += " with entries OUT OF PLACE (gptfix -esxi)"
		}
	}
	return s
}

// Network brings the network up as ip= says.
func (s *System) Network(ctx context.Context, c *cmdline.Config) (any, error) {
	if s.net != nil { // already up (the job step needed it first)
		return s.net, nil
	}
	res, err := netup.Up(ctx, c.IP, netup.Options{BootIF: c.BootIF, Log: s.Con.Printf})
	if err != nil {
		return nil, err
	}
	s.net = res
	s.Con.Printf("network: %s (%s) %s via %s, DNS %v", res.Interface, res.MAC, res.Address, res.Gateway, res.DNS)
	return res, nil
}

// Reference loads the image's table and the reference for fix/verify.
func (s *System) Reference(ctx context.Context, c *cmdline.Config) (any, error) {
	details := map[string]any{"ref": c.Ref}
	if err := s.loadCred(ctx, c); err != nil {
		return nil, err
	}
	if c.Image != "" && !c.Multicast() && (c.Ref == cmdline.RefImage || c.Has(cmdline.ActionRestore)) {
		t, comp, err := imageTable(ctx, c.Image, s.cred)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", c.Image, err)
		}
		s.imageTab = t
		details["image_compression"] = comp
		details["image_disk_size"] = t.DiskSize
		details["image_min_disk_size"] = MinDiskSize(t)
		s.Con.Printf("reference: image %s (%s), GPT with %d-byte sectors from a %s disk, needs at least %s",
			c.Image, comp, t.SectorSize, inventory.HumanSize(t.DiskSize), inventory.HumanSize(MinDiskSize(t)))
	}
	switch c.Ref {
	case cmdline.RefImage:
		s.ref, s.refDesc = s.imageTab, "the image "+c.Image
	case cmdline.RefESXi:
		s.ref, s.refDesc = nil, "the ESXi layout recognised on the disk"
	default:
		path := c.Ref
		if cmdline.IsURL(c.Ref) || cmdline.IsShare(c.Ref) {
			p, err := s.download(ctx, c.Ref)
			if err != nil {
				return nil, err
			}
			path = p
		}
		t, err := gpt.LoadReference(path, 0)
		if err != nil {
			return nil, fmt.Errorf("reference %s: %w", c.Ref, err)
		}
		s.ref, s.refDesc = t, "the layout file "+c.Ref
	}
	details["description"] = s.refDesc
	s.Con.Printf("reference: %s", s.refDesc)
	return details, nil
}

func (s *System) download(ctx context.Context, url string) (string, error) {
	rc, err := openStream(ctx, url, s.cred)
	if err != nil {
		return "", fmt.Errorf("downloading %s: %w", url, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(s.TmpDir, "rescue-ref-*")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.Copy(f, io.LimitReader(rc, 64<<20)); err != nil {
		return "", fmt.Errorf("downloading %s: %w", url, err)
	}
	return f.Name(), f.Sync()
}

// Target resolves rescue.target.
func (s *System) Target(ctx context.Context, c *cmdline.Config) (string, any, error) {
	need := target.Need{Purpose: target.ForFix, HaveRef: s.ref != nil, Writes: c.WritesDisk()}
	refForMatch := s.ref
	if c.Has(cmdline.ActionRestore) {
		need = target.Need{Purpose: target.ForRestore, HaveRef: true, Writes: true}
		refForMatch = s.imageTab
		if s.imageTab != nil {
			need.MinSize = MinDiskSize(s.imageTab)
		}
	}
	var facts []target.Facts
	for _, d := range s.disks {
		facts = append(facts, target.Examine(d, refForMatch, s.medium))
	}
	return s.pickDisk("target", c.Target, facts, need)
}

// pickDisk resolves a disk named on the command line (target.Named's
// refusals) or, with auto, target.Select's choice; role ("target",
// "source") starts the console line saying which and why. The details
// are the disk's facts, or with auto the choice, why, and all disks.
func (s *System) pickDisk(role, name string, facts []target.Facts, need target.Need) (string, any, error) {
	if name != cmdline.TargetAuto {
		f, err := target.Named(facts, name, need)
		switch {
		case f == nil:
			return "", nil, err
		case err != nil:
			return "", *f, err
		}
		s.Con.Printf("%s: %s (named on the command line)", role, f.Disk.Describe())
		return f.Disk.Path, *f, nil
	}
	chosen, why, err := target.Select(facts, need)
	if err != nil {
		return "", facts, err
	}
	s.Con.Printf("%s: %s", role, why)
	return chosen.Disk.Path, map[string]any{"chosen": chosen.Disk.Path, "why": why, "disks": facts}, nil
}

func (s *System) refuse() []string {
	var r []string
	for p := range s.medium {
		r = append(r, p)
	}
	for _, d := range s.disks {
		if f := target.Examine(d, nil, s.medium); f.RescueMedium {
			r = append(r, d.Path)
		}
	}
	return r
}

// Restore copies the image onto the target.
func (s *System) Restore(ctx context.Context, c *cmdline.Config, dst string) (any, error) {
	opt := imaging.Options{
		Src: c.Image, Dst: dst, Verify: s.VerifyCopy, Yes: true,
		Progress: s.Con, ProgressMode: imaging.ProgressPlain, ProgressInterval: 10 * time.Second,
		Log: s.Con.Printf, Refuse: s.refuse(),
	}
	if c.SHA256 != nil {
		opt.SHA256 = hex.EncodeToString(c.SHA256)
	}
	opt.Bmap, opt.Delta, opt.HTTPConns = c.Bmap, c.Delta, c.HTTPConns
	if c.Delta {
		s.Con.Printf("restore: rescue.delta=1: reading %s alongside the image, writing only the blocks that differ", dst)
	}
	if err := s.loadCred(ctx, c); err != nil {
		return nil, err
	}
	opt.Cred = s.cred
	opt.PubKey, opt.Manifest = c.PubKey, c.Manifest
	if c.PubKey != "" {
		s.Con.Printf("restore: the image's manifest or block map must be signed by the key of rescue.pubkey= (minisign)")
	}
	opt.OnProgress = s.OnProgress
	// Both undo files of a restore (the target's old table, saved before
	// it is invalidated; the GPT fix-up's) go straight to the stick.
	undoPath, where, release := s.undoPath("restore-", dst)
	opt.UndoPath = undoPath
	s.Con.Printf("restore: %s -> %s", c.Image, dst)
	res, err := imaging.Copy(ctx, opt)
	if res != nil && res.TableUndoPath != "" {
		s.recordUndo("restore", dst, res.TableUndoPath, s.sibling(res.TableUndoPath, undoPath, where), true)
	}
	if res != nil && res.UndoPath != "" {
		s.recordUndo("restore", dst, res.UndoPath, where, true)
	}
	release()
	if err != nil {
		return res, err
	}
	sum := res.SHA256
	if res.SHA256From == "bmap" {
		sum = res.BmapSHA256 + " claimed by the block map, not hashed"
	}
	s.Con.Printf("restore: %s written in %.0fs (sha256 %s, verified %v)", inventory.HumanSize(res.Bytes), res.Duration.Seconds(), sum, res.Verified)
	if res.BmapPath != "" {
		s.Con.Printf("restore: block map %s: all %d ranges matched", res.BmapPath, res.BmapRanges)
	}
	if d := res.Delta; d != nil {
		s.Con.Printf("restore: delta: read %s of the target, %s identical (skipped), %s written",
			inventory.HumanSize(d.TargetRead), inventory.HumanSize(d.Identical), inventory.HumanSize(d.Written))
	}
	if res.GPTFixup != "" {
		s.Con.Printf("restore: %s", res.GPTFixup)
	}
	if err := Reread(dst, 10*time.Second); err != nil {
		return res, err
	}
	return res, nil
}

// FixResult is the record of a fix.
type FixResult struct {
	Reference string   `json:"reference"`
	Plan      string   `json:"plan"`
	Steps     []string `json:"steps,omitempty"`
	Applied   bool     `json:"applied"`
	UndoPath  string   `json:"undo_path,omitempty"`
	// BootBefore is what ESXi's boot loaders would have done with the
	// table as found (per loader generation).
	BootBefore *esxi.BootReport `json:"boot_before,omitempty"`
}

// TestPauseSeconds is how long the fix pauses between the backup and the
// primary write with rescue.testpause=between-backup-and-primary: long
// enough for the QEMU crash test to cut the power.
const TestPauseSeconds = "600"

// Fix plans the GPT repair of the target against the reference, prints
// the plan, and applies it with an undo file on the rescue tmpfs.
func (s *System) Fix(ctx context.Context, c *cmdline.Config, dst string) (any, error) {
	dev, err := gpt.OpenDevice(dst, 0, true)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if parts, err := esxi.ParseMBR(dev.File, dev.Size); err == nil {
		return nil, fmt.Errorf("%s: %s", dst, esxi.ExplainMBR(parts).Text)
	}
	t, err := dev.ReadTable()
	if err != nil {
		return nil, fmt.Errorf("reading the GPT of %s: %w", dst, err)
	}
	opt := gpt.FixOptions{Ref: s.ref}
	res := &FixResult{Reference: s.refDesc}
	if br, err := esxi.Inspect(dev.File, dev.Size, dev.SectorSize); err == nil && br.GPTValid {
		res.BootBefore = br
		for _, l := range br.Loaders {
			s.Con.Printf("before fix: %s", l.Text)
		}
	}
	if s.ref == nil {
		m, err := esxi.Recognize(t)
		if err != nil {
			return res, fmt.Errorf("no reference given and %w", err)
		}
		s.Con.Printf("fix: %s", m.Text)
		opt.SlotMap, opt.SlotMapReason = m.SlotMap, "the ESXi "+m.Family+" layout"
	}
	plan, err := gpt.PlanFix(t, opt)
	if err != nil {
		return res, err
	}
	res.Plan, res.Steps = plan.String(), plan.Steps
	for _, l := range strings.Split(strings.TrimRight(plan.String(), "\n"), "\n") {
		s.Con.Printf("plan: %s", l)
	}
	if plan.Empty() {
		s.Con.Printf("fix: %s already matches %s; nothing written", dst, s.refDesc)
		return res, nil
	}
	undoPath, where, release := s.undoPath("", dst)
	res.UndoPath = where
	// Named once, before the first write: if the power goes mid-write,
	// the console already said where the undo file is.
	s.Con.Printf("fix: undo file %s (to revert: gptfix -undo FILE -yes %s, with this file or the run's report.json)", where, dst)
	if c.TestPause == "between-backup-and-primary" {
		os.Setenv(gpt.PauseEnv, TestPauseSeconds)
		defer os.Unsetenv(gpt.PauseEnv)
	}
	err = plan.Apply(dev, undoPath)
	size := s.recordUndo("fix", dst, undoPath, where, false)
	release()
	if err != nil {
		return res, fmt.Errorf("applying the plan (undo file %s): %w", where, err)
	}
	res.Applied = true
	s.Con.Printf("fix: written and verified (the undo file above: %d bytes, also in the report)", size)
	dev.Close()
	if err := Reread(dst, 10*time.Second); err != nil {
		return res, err
	}
	return res, nil
}

// VerifyResult is the record of a verification.
type VerifyResult struct {
	Reference string           `json:"reference"`
	Verdict   string           `json:"verdict"`
	Problems  []gpt.Problem    `json:"problems,omitempty"`
	Diff      *gpt.Diff        `json:"diff,omitempty"`
	ESXi      string           `json:"esxi,omitempty"`
	Boot      *esxi.BootReport `json:"boot,omitempty"` // what ESXi's boot loader would do
}

// Verify re-reads the target from the disk (buffer cache flushed) and
// checks both GPT copies, their CRCs and places, and the slots against
// the reference or the canonical ESXi layout.
func (s *System) Verify(ctx context.Context, c *cmdline.Config, dst string) (any, error) {
	dev, err := gpt.OpenDevice(dst, 0, false)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	if dev.IsBlock {
		unix.IoctlSetInt(int(dev.Fd()), unix.BLKFLSBUF, 0)
	}
	t, err := dev.ReadTable()
	if err != nil {
		return nil, fmt.Errorf("reading the GPT of %s: %w", dst, err)
	}
	res := &VerifyResult{Reference: s.refDesc, Problems: t.Problems}
	var fails []string
	if t.Primary == nil || !t.Primary.Valid() {
		fails = append(fails, "the primary GPT is not valid")
	}
	if t.Backup == nil || !t.Backup.Valid() {
		fails = append(fails, "the backup GPT is not valid")
	}
	for _, p := range t.Problems {
		fails = append(fails, p.String())
	}
	if m, err := esxi.Recognize(t); err == nil {
		res.ESXi = m.Family
		if s.ref == nil && m.NeedsMove() {
			fails = append(fails, "entries are not in the slots ESXi "+m.Family+" uses")
		}
	} else if s.ref == nil {
		fails = append(fails, err.Error())
	}
	if s.ref != nil {
		d := gpt.Compare(s.ref, t)
		res.Diff = d
		if !d.Same() {
			fails = append(fails, "differs from "+s.refDesc+": "+d.Verdict)
		}
	}
	if res.ESXi != "" {
		// What ESXi's boot loader would do: boot the newest bank from
		// entry 5 or 6 and find its partitions by number.
		br, err := esxi.Inspect(dev.File, dev.Size, dev.SectorSize)
		if err == nil {
			s.esxiFindings(br, dst)
		}
		switch {
		case err != nil:
			fails = append(fails, "boot check: "+err.Error())
		case !br.OK:
			res.Boot = br
			fails = append(fails, "boot check: "+br.Verdict)
		default:
			res.Boot = br
			s.Con.Printf("verify: %s", br.Verdict)
		}
	}
	if len(fails) > 0 {
		res.Verdict = strings.Join(fails, "; ")
		return res, errors.New(res.Verdict)
	}
	res.Verdict = fmt.Sprintf("%s: both GPT copies valid (CRCs), backup at the end of the disk, every entry in its slot per %s", dst, s.refDesc)
	s.Con.Printf("verify: %s", res.Verdict)
	return res, nil
}

// esxiFindings prints what the table does not show: each loader
// generation's choice where they differ, the VMFS volumes' disk identity
// against the target's own (the snapshot trap), Windows leftovers.
func (s *System) esxiFindings(br *esxi.BootReport, dst string) {
	for _, l := range br.BankLines() {
		s.Con.Printf("verify: %s", l)
	}
	if br.LoadersDiffer() {
		for _, l := range br.Loaders {
			s.Con.Printf("verify: %s", l.Text)
		}
	}
	if dir, err := esxi.BlockSysfsDir(dst); err == nil {
		if id, err := esxi.SysfsIdentity(dir); err == nil {
			br.CheckIdentity(id)
		}
	}
	for _, w := range br.Warnings {
		s.Con.Printf("verify: WARNING: %s", w)
	}
	for _, w := range br.WindowsSigns {
		s.Con.Printf("verify: Windows leftovers (harmless, but a Windows host had this disk): %s", w)
	}
}

// Esxiboot finds u-root's esxiboot.
func Esxiboot() (string, error) {
	for _, p := range []string{"/bbin/esxiboot", "/bin/esxiboot"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("esxiboot")
	if err != nil {
		return "", errors.New("esxiboot is not in this initramfs")
	}
	return p, nil
}

// BootCheck loads ESXi from the target without booting it (esxiboot
// -dry-run): the boot banks at entries 5 and 6 must hold a bootable
// ESXi.
func (s *System) BootCheck(ctx context.Context, dst string) (any, error) {
	p, err := Esxiboot()
	if err != nil {
		return nil, err
	}
	if err := CheckKexecAllowed(); err != nil {
		return nil, err
	}
	// The kernel's partitions must be the table's (esxiboot mounts 5 and
	// 6 by number), whatever step wrote the table last.
	if err := Reread(dst, 10*time.Second); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, p, "--device", dst, "--dry-run") // u-root unixflag: -device would be -d -e -v ...
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	text := strings.TrimSpace(out.String())
	for _, l := range strings.Split(text, "\n") {
		s.Con.Printf("esxiboot: %s", l)
	}
	if err != nil {
		return text, fmt.Errorf("esxiboot --device %s --dry-run: %w", dst, err)
	}
	return text, nil
}
