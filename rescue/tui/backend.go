package tui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/esxi"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/netup"
	"github.com/esxi-rescue/rescue/rescue/system"
	"github.com/esxi-rescue/rescue/rescue/target"
	"golang.org/x/sys/unix"
)

// Backend does the real work behind the screens by calling the project's
// packages: inventory (disks, NICs), target (the rescue stick), gpt
// (read, plan, apply), esxi (recognition, boot banks), imaging (restore,
// back up), netup (network) and system (reread, kexec check). The screens
// never touch a disk themselves.
type Backend struct {
	// Sys is where sysfs and procfs are ("/" normally).
	Sys inventory.Sys
	// Files, when set, are image files used as the disks instead of
	// sysfs's (test mode: the same code paths on files).
	Files []string
	// UndoSite makes a place for undo files ready (the rescue stick's
	// FAT partition, mounted for the time of the write); nil or an error
	// = the RAM disk (os.TempDir), which is lost at reboot.
	UndoSite func() (*UndoSite, error)
	// Drivers is the driver step's summary line (coldplug), "" if unknown.
	Drivers string
	// Now gives the time (tests fix it); nil = time.Now.
	Now func() time.Time
	// KexecAllowed says whether booting ESXi by kexec can work (nil) or
	// why not; nil = system.CheckKexecAllowed (Secure Boot locks the
	// kernel down).
	KexecAllowed func() error

	mu sync.Mutex // one disk write at a time
}

// UndoSite is a directory for undo files while it is held.
type UndoSite struct {
	Dir     string
	Where   func(name string) string // the file in plain words, for the screen
	Release func() error             // syncs and unmounts; nil = nothing to do
}

// Hardware is what the home screen reports.
type Hardware struct {
	Disks []DiskReport
	NICs  []NICReport
	// Controllers is the hardware report (inventory.Hardware): each PCI
	// storage/network/USB/SD controller with its driver or why it has
	// none; Missing is set for the ones without a working driver.
	Controllers []Controller
	Drivers     string
}

// Controller is one line of the hardware report.
type Controller struct {
	Text    string
	Missing bool
}

// NICReport is one network interface with its addresses.
type NICReport struct {
	inventory.NIC
	Addrs []string
}

// Health grades a disk's verdict.
type Health int

// The grades, from good to bad.
const (
	HealthOK Health = iota
	HealthInfo
	HealthWarn
	HealthBad
)

// DiskReport is one disk as the screens show it.
type DiskReport struct {
	Disk    inventory.Disk
	Facts   target.Facts
	Table   *gpt.Table        // nil when unreadable or no GPT
	Match   *esxi.Match       // the ESXi layout recognised, nil if none
	Boot    *esxi.BootReport  // what ESXi's boot loader would do (ESXi disks)
	Plan    *gpt.Plan         // gptfix's plan; nil when none could be made
	PlanErr string            // why no plan
	Verdict string            // the disk in plain words
	Health  Health            //
	Err     string            // reading failed
	Slots   map[int]gpt.Entry // current used slots
}

// Writable reports whether the screens may offer to write this disk.
func (r *DiskReport) Writable() error {
	switch {
	case r.Facts.RescueMedium:
		return errors.New("it is the rescue stick this system runs from")
	case r.Disk.ReadOnly:
		return errors.New("it is read-only")
	case len(r.Disk.Mounted) > 0:
		return fmt.Errorf("it is mounted on %s", strings.Join(r.Disk.Mounted, ","))
	}
	return nil
}

func (b *Backend) kexecAllowed() error {
	if b.KexecAllowed != nil {
		return b.KexecAllowed()
	}
	return system.CheckKexecAllowed()
}

func (b *Backend) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// FileDisk describes an image file as a disk (test mode).
func FileDisk(path string) (inventory.Disk, error) {
	st, err := os.Stat(path)
	if err != nil {
		return inventory.Disk{}, err
	}
	ss := gpt.GuessSectorSize(path)
	if ss == 0 {
		ss = 512
	}
	return inventory.Disk{Name: filepath.Base(path), Path: path, Size: st.Size(), SectorSize: ss, Model: "image file"}, nil
}

// Disks lists the disks: sysfs's, or Files in test mode.
func (b *Backend) Disks() ([]inventory.Disk, error) {
	if len(b.Files) == 0 {
		return b.Sys.Disks()
	}
	var out []inventory.Disk
	for _, f := range b.Files {
		d, err := FileDisk(f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// Scan examines every disk and NIC (read-only).
func (b *Backend) Scan() (*Hardware, error) {
	disks, err := b.Disks()
	if err != nil {
		return nil, err
	}
	hw := &Hardware{Drivers: b.Drivers}
	for _, d := range disks {
		hw.Disks = append(hw.Disks, Examine(d))
	}
	if len(b.Files) == 0 {
		nics, _ := b.Sys.NICs()
		for _, n := range nics {
			hw.NICs = append(hw.NICs, NICReport{NIC: n, Addrs: addrs(n.Name)})
		}
		if rep, err := system.HardwareReport(b.Sys.Root, release()); err == nil {
			for _, d := range rep.PCI {
				hw.Controllers = append(hw.Controllers, Controller{d.String(), d.Driver == "" || len(d.FirmwareMissing) > 0})
			}
			for _, r := range rep.OtherFirmwareMissing {
				hw.Controllers = append(hw.Controllers, Controller{fmt.Sprintf("%s %s: firmware missing: %s", r.Driver, r.Device, r.File), true})
			}
		}
	}
	return hw, nil
}

func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func addrs(name string) []string {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	as, _ := ifi.Addrs()
	var out []string
	for _, a := range as {
		if ip, _, err := net.ParseCIDR(a.String()); err == nil && ip.To4() == nil && ip.IsLinkLocalUnicast() {
			continue // IPv6 link-local: noise for the reader
		}
		out = append(out, a.String())
	}
	return out
}

// planFor is gptfix's plan for a table: with the ESXi slot map when the
// layout is ESXi's (gptfix -esxi), else the repairs any table gets.
func planFor(t *gpt.Table, m *esxi.Match) (*gpt.Plan, error) {
	opt := gpt.FixOptions{}
	if m != nil {
		opt.SlotMap, opt.SlotMapReason = m.SlotMap, "the ESXi "+m.Family+" layout"
	}
	return gpt.PlanFix(t, opt)
}

// Examine reads one disk (read-only) and puts its state in plain words.
func Examine(d inventory.Disk) DiskReport {
	r := DiskReport{Disk: d, Facts: target.Examine(d, nil, nil)}
	f := r.Facts
	switch {
	case f.RescueMedium:
		r.Verdict, r.Health = "the rescue stick this system runs from (never written)", HealthInfo
		return r
	case f.ReadErr != "":
		r.Err, r.Verdict, r.Health = f.ReadErr, "cannot be read: "+f.ReadErr, HealthBad
		return r
	case f.Blank:
		r.Verdict, r.Health = "blank (no partition table): a target for a restore", HealthInfo
		return r
	case !f.HasGPT:
		r.Verdict, r.Health = "no GPT (an MBR table or a file system)", HealthInfo
		return r
	}
	dev, err := gpt.OpenDevice(d.Path, d.SectorSize, false)
	if err != nil {
		r.Err, r.Verdict, r.Health = err.Error(), "cannot be opened: "+err.Error(), HealthBad
		return r
	}
	defer dev.Close()
	t, err := dev.ReadTable()
	if err != nil {
		r.Err, r.Verdict, r.Health = err.Error(), "cannot be read: "+err.Error(), HealthBad
		return r
	}
	r.Table = t
	r.Slots = map[int]gpt.Entry{}
	for _, s := range t.Slots() {
		if s.Used() {
			r.Slots[s.Index] = s.Entry()
		}
	}
	if m, err := esxi.Recognize(t); err == nil {
		r.Match = m
		if br, err := esxi.Inspect(dev.File, dev.Size, dev.SectorSize); err == nil {
			r.Boot = br
		}
	}
	if p, err := planFor(t, r.Match); err != nil {
		r.PlanErr = err.Error()
	} else {
		r.Plan = p
	}
	r.Verdict, r.Health = verdict(&r)
	return r
}

// verdict is the one-line account of a readable GPT disk.
func verdict(r *DiskReport) (string, Health) {
	needsFix := r.Plan != nil && !r.Plan.Empty()
	if r.Match == nil {
		s := fmt.Sprintf("GPT with %d partitions, not an ESXi layout", len(r.Slots))
		if needsFix {
			return s + "; the table needs repair: " + r.Plan.Steps[0], HealthWarn
		}
		return s, HealthOK
	}
	s := "ESXi " + r.Match.Family + " boot disk - "
	if r.Match.NeedsMove() {
		var out []int
		for from, to := range r.Match.SlotMap {
			if from != to {
				out = append(out, to)
			}
		}
		sort.Ints(out)
		var nums []string
		for _, n := range out {
			nums = append(nums, strconv.Itoa(n))
		}
		return s + "entries " + strings.Join(nums, ",") + " out of place: ESXi will not boot correctly", HealthBad
	}
	if needsFix {
		return s + "entries in their slots, but the table needs repair: " + r.Plan.Steps[0], HealthWarn
	}
	if r.Boot != nil && !r.Boot.OK {
		return s + "entries in their slots; the boot check says: " + r.Boot.Verdict, HealthWarn
	}
	return s + "entries in their slots, both GPT copies valid", HealthOK
}

// ErrChanged is returned by Fix when the disk no longer gives the plan
// the person confirmed.
var ErrChanged = errors.New("the disk changed since the plan was shown; nothing written (look at it again)")

// FixResult is the outcome of a fix.
type FixResult struct {
	UndoPath string // the undo file
	Where    string // where that is, in plain words
	After    DiskReport
}

// Fix applies gptfix's plan to the disk, the one shown (plan text
// wantPlan): it re-reads the disk, re-plans, refuses when the plan
// differs, saves the undo file, and writes with gpt's crash-safe Apply
// (backup, fsync, primary, fsync, verify); then the kernel re-reads the
// partitions.
func (b *Backend) Fix(d inventory.Disk, wantPlan string) (*FixResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := Examine(d)
	if err := cur.Writable(); err != nil {
		return nil, fmt.Errorf("%s is not written: %w", d.Path, err)
	}
	if cur.Table == nil {
		return nil, fmt.Errorf("%s: %s", d.Path, cur.Verdict)
	}
	if cur.Plan == nil || cur.Plan.String() != wantPlan {
		return nil, ErrChanged
	}
	if cur.Plan.Empty() {
		return nil, fmt.Errorf("%s needs no changes", d.Path)
	}
	dev, err := gpt.OpenDevice(d.Path, d.SectorSize, true)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	t, err := dev.ReadTable()
	if err != nil {
		return nil, fmt.Errorf("reading the GPT of %s: %w", d.Path, err)
	}
	plan, err := planFor(t, cur.Match)
	if err != nil {
		return nil, err
	}
	if plan.String() != wantPlan {
		return nil, ErrChanged
	}
	site := b.undoSite()
	name := fmt.Sprintf("gptfix-undo-%s-%s.json", filepath.Base(d.Path), b.now().UTC().Format("20060102T150405Z"))
	res := &FixResult{UndoPath: filepath.Join(site.Dir, name), Where: site.Where(name)}
	err = plan.Apply(dev, res.UndoPath)
	if site.Release != nil {
		if rerr := site.Release(); rerr != nil && err == nil {
			res.Where += " (but releasing it failed: " + rerr.Error() + ")"
		}
	}
	if err != nil {
		return res, fmt.Errorf("applying the plan (undo file %s): %w", res.Where, err)
	}
	dev.Close()
	if err := system.Reread(d.Path, 10*time.Second); err != nil {
		return res, err
	}
	res.After = Examine(d)
	return res, nil
}

// undoSite is UndoSite's place, else the RAM disk.
func (b *Backend) undoSite() *UndoSite {
	if b.UndoSite != nil {
		if s, err := b.UndoSite(); err == nil && s != nil {
			return s
		}
	}
	dir := os.TempDir()
	return &UndoSite{Dir: dir, Where: func(name string) string {
		return filepath.Join(dir, name) + " on the rescue system's RAM disk (lost at reboot: copy it off)"
	}}
}

// CopyJob is a restore (Compress "") or a back-up.
type CopyJob struct {
	Src, Dst string
	SHA256   string // expected SHA-256 of the image, "" = none
	Compress string // back-up: "zstd", "gzip", "none"
	Refuse   []string
}

// Progress is one progress report of a copy.
type Progress struct {
	Label       string        // the phase: restore, verify, backup
	Done, Total int64         // bytes of the image; Total -1 when unknown
	Rate        float64       // bytes per second
	ETA         time.Duration // 0 when unknown
}

// Copy runs imaging.Copy for job, reporting progress to onProgress.
func (b *Backend) Copy(ctx context.Context, job CopyJob, onProgress func(Progress)) (*imaging.Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	opt := imaging.Options{Src: job.Src, Dst: job.Dst, SHA256: job.SHA256, Compress: job.Compress,
		// A restore's Yes is the device name the person typed; a back-up
		// never overwrites an existing image.
		Verify: true, Yes: job.Compress == "", Refuse: job.Refuse}
	if job.Compress == "" {
		site := b.undoSite()
		if site.Release != nil {
			defer site.Release()
		}
		opt.UndoPath = filepath.Join(site.Dir, fmt.Sprintf("restore-undo-%s-%s.json", filepath.Base(job.Dst), b.now().UTC().Format("20060102T150405Z")))
	}
	setProgress(&opt, onProgress)
	res, err := imaging.Copy(ctx, opt)
	if err == nil && job.Compress == "" {
		err = system.Reread(job.Dst, 10*time.Second)
	}
	return res, err
}

// RescueDisks lists the disks that are the rescue medium (never written).
func RescueDisks(hw *Hardware) []string {
	var out []string
	for _, d := range hw.Disks {
		if d.Facts.RescueMedium {
			out = append(out, d.Disk.Path)
		}
	}
	return out
}

// NetworkUp configures one NIC: DHCP, or a static address given as
// "ADDR/PREFIX" with an optional gateway and DNS server.
func NetworkUp(ctx context.Context, nic string, dhcp bool, addr, gw, dns string) (*netup.Result, error) {
	cfg := &netup.IPConfig{Mode: netup.ModeDHCP, Device: nic}
	if !dhcp {
		ip, ipn, err := net.ParseCIDR(strings.TrimSpace(addr))
		if err != nil {
			return nil, fmt.Errorf("address %q: want ADDRESS/PREFIX, e.g. 10.0.0.5/24", addr)
		}
		// The kernel's ip= form, checked by netup's own parser.
		spec := fmt.Sprintf("%s::%s:%s::%s:off:%s", ip, strings.TrimSpace(gw), net.IP(ipn.Mask), nic, strings.TrimSpace(dns))
		if cfg, err = netup.ParseIP(spec); err != nil {
			return nil, err
		}
	}
	return netup.Up(ctx, cfg, netup.Options{LinkTimeout: 10 * time.Second, DHCPTimeout: 20 * time.Second})
}
