package esxi

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem"
)

// BootReport is what an ESXi 5/6 boot loader (esx-boot's safeboot, and
// u-root's esxiboot, which follows it) would do with a disk, and where ESXi
// would then look for its other partitions.
type BootReport struct {
	SectorSize int   `json:"sector_size"`
	DiskBytes  int64 `json:"disk_bytes"`
	// GPTValid: the primary GPT has a valid header and array CRC, the only
	// table the loader reads.
	GPTValid bool           `json:"gpt_valid"`
	Banks    []BankReport   `json:"banks"`           // entries 5 and 6, where the loader looks
	Others   []BankReport   `json:"other_banks"`     // boot banks found at other entries by content
	Chosen   int            `json:"chosen_slot"`     // the entry the loader boots, 0 for none
	Loader   string         `json:"loader"`          // the loader generation that applies (LoaderGens), from the newest bank's build=
	Loaders  []LoaderReport `json:"loaders"`         // what each loader generation would boot
	Mounts   []MountReport  `json:"mounts"`          // the numbered partitions ESXi mounts
	Family   string         `json:"family"`          // ESXi major version from the booted bank's build=
	Notes    []string       `json:"notes,omitempty"` // facts that do not stop ESXi
	Problems []string       `json:"problems,omitempty"`
	// Volumes are the VMFS and VMFS-L volumes with their LVM header (the
	// identity of the disk they were made on); CheckIdentity compares.
	Volumes []VolumeReport `json:"volumes,omitempty"`
	// WindowsSigns lists Windows leftovers on ESXi's FAT partitions
	// ($RECYCLE.BIN, DESKTOP.INI, System Volume Information): harmless,
	// but a sign that a Windows host had the disk.
	WindowsSigns []string `json:"windows_signs,omitempty"`
	// Warnings are things that will hurt after boot that the table does
	// not show (a VMFS volume taken for a snapshot).
	Warnings []string   `json:"warnings,omitempty"`
	MBR      *MBRReport `json:"mbr,omitempty"` // the disk has an MBR (msdos) table, not a GPT
	Bootable bool       `json:"bootable"`      // the loader boots some bank
	OK       bool       `json:"ok"`            // it boots the newest bank and finds its partitions
	Verdict  string     `json:"verdict"`
}

// BankReport is one candidate boot bank as the loader checks it.
type BankReport struct {
	Slot      int      `json:"slot"`
	Present   bool     `json:"present"` // the entry is used
	Type      string   `json:"type,omitempty"`
	First     uint64   `json:"first_lba,omitempty"`
	Last      uint64   `json:"last_lba,omitempty"`
	UUID      string   `json:"uuid,omitempty"` // bootUUID= value, from the magic sector
	BootCfg   bool     `json:"boot_cfg"`
	BootState int      `json:"bootstate"`
	Build     string   `json:"build,omitempty"`
	Updated   int      `json:"updated"`
	Kernel    string   `json:"kernel,omitempty"`
	Modules   []string `json:"modules,omitempty"`
	Valid     bool     `json:"valid"`
	Reason    string   `json:"reason,omitempty"` // why not valid
	// Scanned: the loader's bank_scan accepts it as a bank (magic, UUID
	// and a boot.cfg that parses), valid or not; it takes a place among
	// the banks a scanning loader keeps.
	Scanned bool `json:"scanned"`
	TypeOK  bool `json:"type_ok"` // Basic Data or EFI system (7.0 U2+ rule)
}

// MountReport says what ESXi finds at an entry number it mounts.
type MountReport struct {
	Slot  int    `json:"slot"`
	Want  Role   `json:"want"`
	Found string `json:"found"` // the kind of partition there ("" for an empty slot)
	At    []int  `json:"at,omitempty"`
	OK    bool   `json:"ok"`
}

// Inspect applies ESXi's boot loader rules to the disk in r (size bytes;
// sectorSize 0 detects 512 or 4096): only the primary GPT, which must have
// valid header and array CRCs; then, per loader generation (LoaderGens),
// where it looks for boot banks (entries 5 and 6 up to 6.7u1; later every
// entry, by content, keeping the first 2 or 3; 7.0 U2+ only Basic Data or
// EFI types), what makes a bank ("VMWARE FAT16    " + UUID at the
// partition's second sector, a FAT with boot.cfg: bootstate 0 or 1,
// non-empty build=, updated > 0, the kernel and modules present) and which
// it boots (the highest updated, the lower entry on a tie). Chosen,
// Bootable and the problems follow the generation the newest bank's
// build= installed; Loaders says what every generation would do. It also
// checks the entries ESXi mounts by number: scratch 2, datastore 3,
// store/locker 8 (ESXi 5/6), OSDATA 7 and datastore 8 (7.x/8.x).
//
// For entries 5 and 6 it agrees with u-root's esxiboot (pkg/boot/esxi) on
// where banks are, how the magic sector is read (at the disk's logical
// block size), bootstate 0 and 1, and the tie rule; like esx-boot it is
// stricter in also wanting a non-empty build= and updated > 0.
func Inspect(r io.ReaderAt, size int64, sectorSize int) (*BootReport, error) {
	rep := &BootReport{SectorSize: sectorSize, DiskBytes: size}
	if size < 34*512 {
		return nil, fmt.Errorf("esxi: %d bytes is too small for a GPT disk", size)
	}
	if parts, err := ParseMBR(r, size); err == nil || len(parts) > 0 {
		rep.MBR = ExplainMBR(parts)
		rep.SectorSize = 512
		rep.Problems = append(rep.Problems, rep.MBR.Text)
		return rep.finish(), nil
	}
	if rep.SectorSize == 0 {
		ss, err := detectSectorSize(r)
		if err != nil {
			rep.SectorSize = 512
			rep.Problems = append(rep.Problems, "no primary GPT header at LBA 1: ESXi's boot loader reads only the primary GPT")
			return rep.finish(), nil
		}
		rep.SectorSize = ss
	}
	ss := rep.SectorSize
	prim, err := readRawCopy(r, size, 1, ss)
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("primary GPT unusable (%v): ESXi's boot loader reads only the primary GPT", err))
		return rep.finish(), nil
	}
	switch {
	case !prim.headerCRCOK():
		rep.Problems = append(rep.Problems, "primary GPT header CRC mismatch: ESXi's boot loader rejects the disk (it never reads the backup)")
	case !prim.arrayCRCOK():
		rep.Problems = append(rep.Problems, "primary GPT entry array CRC mismatch: ESXi's boot loader rejects the disk (it never reads the backup)")
	default:
		rep.GPTValid = true
	}
	rep.Notes = append(rep.Notes, backupNote(r, size, ss, prim))
	if !rep.GPTValid {
		return rep.finish(), nil
	}
	entries := prim.entries()
	bySlot := map[int]rawEntry{}
	for _, e := range entries {
		bySlot[e.Slot] = e
	}
	st := &readerStorage{r: r, size: size}
	var cands []BankReport
	for _, slot := range []int{5, 6} {
		e, ok := bySlot[slot]
		if !ok {
			rep.Banks = append(rep.Banks, BankReport{Slot: slot, Reason: "empty slot"})
			continue
		}
		b := checkBank(r, st, size, ss, e)
		rep.Banks = append(rep.Banks, b)
		cands = append(cands, b)
	}
	kinds := map[int]string{}
	for _, e := range entries {
		kinds[e.Slot] = classify(r, st, size, ss, e)
		rep.inspectContents(r, st, size, ss, e, kinds[e.Slot])
		if e.Slot == 5 || e.Slot == 6 || kinds[e.Slot] != "bootbank" {
			continue
		}
		b := checkBank(r, st, size, ss, e)
		rep.Others = append(rep.Others, b)
		cands = append(cands, b)
	}
	rep.applyLoaders(cands)
	if rep.Family == "" {
		rep.Family = "6"
	}
	if rep.LoadersDiffer() {
		var ls []string
		for _, l := range rep.Loaders {
			what := "nothing"
			if l.Chosen != 0 {
				what = fmt.Sprintf("entry %d (updated=%d)", l.Chosen, l.Updated)
			}
			ls = append(ls, l.Loader+" would boot "+what)
		}
		rep.Notes = append(rep.Notes, "the ESXi boot loader generations disagree on this disk: "+strings.Join(ls, "; "))
	}
	rep.Mounts = checkMounts(rep.Family, kinds)
	for _, m := range rep.Mounts {
		if m.OK {
			continue
		}
		found := "it is empty"
		if m.Found != "" {
			found = "it holds " + m.Found
		}
		where := fmt.Sprintf("the %s is at entry %s", m.Want, joinInts(m.At))
		if len(m.At) == 0 {
			where = fmt.Sprintf("there is no %s on the disk", m.Want)
		}
		rep.Problems = append(rep.Problems, fmt.Sprintf("ESXi mounts entry %d as %s, but %s; %s", m.Slot, m.Want, found, where))
	}
	return rep.finish(), nil
}

// finish sets OK and the verdict.
func (rep *BootReport) finish() *BootReport {
	rep.OK = rep.Bootable && len(rep.Problems) == 0
	switch {
	case rep.OK:
		var b BankReport
		for _, x := range append(append([]BankReport(nil), rep.Banks...), rep.Others...) {
			if x.Slot == rep.Chosen {
				b = x
			}
		}
		var ms []string
		for _, m := range rep.Mounts {
			if m.Found != "" {
				ms = append(ms, fmt.Sprintf("%s at entry %d", m.Want, m.Slot))
			}
		}
		rep.Verdict = fmt.Sprintf("bootable: ESXi boots bank %s (build %s, updated=%d) from entry %d", b.UUID, b.Build, b.Updated, b.Slot)
		if len(ms) > 0 {
			rep.Verdict += " and finds " + strings.Join(ms, ", ")
		}
	case rep.Bootable:
		rep.Verdict = "boots, but wrongly: " + strings.Join(rep.Problems, "; ")
	case rep.MBR != nil:
		rep.Verdict = "not checked: " + rep.MBR.Text
	default:
		why := rep.Problems
		if rep.GPTValid {
			why = append([]string{"no valid boot bank at entries 5 or 6" + bankReasons(rep.Banks)}, why...)
		}
		rep.Verdict = "not bootable: " + strings.Join(why, "; ")
	}
	return rep
}

func bankReasons(banks []BankReport) string {
	var rs []string
	for _, b := range banks {
		rs = append(rs, fmt.Sprintf("entry %d: %s", b.Slot, b.Reason))
	}
	if len(rs) == 0 {
		return ""
	}
	return " (" + strings.Join(rs, "; ") + ")"
}

// backupNote describes the backup GPT, which the loader ignores.
func backupNote(r io.ReaderAt, size int64, ss int, prim *rawCopy) string {
	last := uint64(size/int64(ss)) - 1
	if prim.altLBA() != last {
		return fmt.Sprintf("the primary header puts the backup GPT at LBA %d, but the disk ends at LBA %d (disk size changed; the loader does not care)", prim.altLBA(), last)
	}
	b, err := readRawCopy(r, size, last, ss)
	if err != nil {
		return fmt.Sprintf("backup GPT unusable (%v); the loader does not read it", err)
	}
	if !b.headerCRCOK() || !b.arrayCRCOK() {
		return "backup GPT CRC mismatch; the loader does not read it"
	}
	return "backup GPT valid at the last LBA"
}

// checkBank applies the loader's rules to one entry.
func checkBank(r io.ReaderAt, st *readerStorage, size int64, ss int, e rawEntry) BankReport {
	b := BankReport{Slot: e.Slot, Present: true, Type: partTypeName(e.Type), First: e.First, Last: e.Last, BootState: 3,
		TypeOK: e.Type == TypeBasicData || e.Type == TypeEFISystem}
	start, psize, ok := partRange(e, ss, size)
	if !ok {
		b.Reason = "partition lies beyond the end of the disk"
		return b
	}
	magic := make([]byte, 32)
	if _, err := r.ReadAt(magic, start+int64(ss)); err != nil {
		b.Reason = "cannot read the partition's second sector"
		return b
	}
	uuid, ok := ParseBankUUID(magic)
	if !ok {
		b.Reason = fmt.Sprintf("no %q magic at byte %d of the partition", strings.TrimSpace(BankMagic), ss)
		return b
	}
	b.UUID = uuid
	fs, err := readFAT(st, start, psize)
	if err != nil {
		b.Reason = "no FAT filesystem"
		return b
	}
	data, err := readAll(fs, "/boot.cfg")
	if err != nil {
		b.Reason = "no boot.cfg"
		return b
	}
	b.BootCfg = true
	cfg, err := ParseBootCfg(data)
	if err != nil {
		b.Reason = err.Error()
		return b
	}
	b.Scanned = true
	b.BootState, b.Build, b.Updated, b.Kernel, b.Modules = cfg.BootState, cfg.Build, cfg.Updated, cfg.Kernel, cfg.Modules
	switch {
	case cfg.BootState != 0 && cfg.BootState != 1:
		b.Reason = fmt.Sprintf("bootstate=%d (only 0 valid and 1 upgrading boot)", cfg.BootState)
	case cfg.Build == "":
		b.Reason = "empty build="
	case cfg.Updated <= 0:
		b.Reason = "updated= missing or 0"
	case cfg.Kernel == "":
		b.Reason = "no kernel="
	default:
		for _, name := range append([]string{cfg.Kernel}, moduleFiles(cfg.Modules)...) {
			if _, ok := fatLookup(fs, name); !ok {
				b.Reason = "file " + name + " named in boot.cfg is missing"
				return b
			}
		}
		b.Valid = true
	}
	return b
}

func moduleFiles(mods []string) []string {
	var out []string
	for _, m := range mods {
		if f := strings.Fields(m); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// fatLookup finds a path (relative to the root, "/" separated) on a FAT,
// ignoring case as FAT does; it reports whether it is a directory.
func fatLookup(fs filesystem.FileSystem, name string) (isDir, ok bool) {
	dir := "." // go-diskfs takes io/fs style paths here
	parts := strings.Split(strings.Trim(name, "/"), "/")
	for i, p := range parts {
		ents, err := fs.ReadDir(dir)
		if err != nil {
			return false, false
		}
		found := false
		for _, e := range ents {
			if strings.EqualFold(e.Name(), p) {
				found, isDir = true, e.IsDir()
				dir = strings.TrimPrefix(dir+"/"+e.Name(), "./")
				break
			}
		}
		if !found || (i < len(parts)-1 && !isDir) {
			return false, false
		}
	}
	return isDir, true
}

func readAll(fs filesystem.FileSystem, name string) ([]byte, error) {
	f, err := fs.OpenFile(name, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

// classify names what kind of ESXi partition an entry holds, by type and
// content.
func classify(r io.ReaderAt, st *readerStorage, size int64, ss int, e rawEntry) string {
	start, psize, ok := partRange(e, ss, size)
	if !ok {
		return "partition beyond the end of the disk"
	}
	switch e.Type {
	case TypeEFISystem:
		return string(RoleSystem)
	case TypeVMKDiagnostic:
		return "vmkDiagnostic"
	case TypeVMFSL:
		return string(RoleOSData)
	case TypeVMFS:
		m := make([]byte, 4)
		if _, err := r.ReadAt(m, start+1<<20); err == nil && binary.LittleEndian.Uint32(m) == VMFSMagic {
			return string(RoleDatastore)
		}
		return "VMFS partition without the VMFS magic"
	case TypeBasicData:
		magic := make([]byte, 32)
		if _, err := r.ReadAt(magic, start+int64(ss)); err == nil {
			if _, ok := ParseBankUUID(magic); ok {
				return "bootbank"
			}
		}
		fs, err := readFAT(st, start, psize)
		if err != nil {
			return "Basic Data partition without a FAT"
		}
		if dir, ok := fatLookup(fs, "packages"); ok && dir {
			return string(RoleStore)
		}
		return string(RoleScratch)
	}
	return "partition of type " + partTypeName(e.Type)
}

// checkMounts compares the entries ESXi mounts by number with what is there.
func checkMounts(family string, kinds map[int]string) []MountReport {
	want := map[int]Role{2: RoleScratch, 3: RoleDatastore, 8: RoleStore}
	if family == "7" || family == "8" {
		want = map[int]Role{7: RoleOSData, 8: RoleDatastore}
	}
	var slots []int
	for s := range want {
		slots = append(slots, s)
	}
	sort.Ints(slots)
	var out []MountReport
	for _, s := range slots {
		m := MountReport{Slot: s, Want: want[s], Found: kinds[s]}
		for slot, k := range kinds {
			if k == string(want[s]) {
				m.At = append(m.At, slot)
			}
		}
		sort.Ints(m.At)
		// Fine when the right kind is there, or when the slot is empty and
		// the disk has no such partition at all (small media).
		m.OK = m.Found == string(m.Want) || (m.Found == "" && len(m.At) == 0)
		out = append(out, m)
	}
	return out
}

func partRange(e rawEntry, ss int, size int64) (start, n int64, ok bool) {
	if e.Last < e.First {
		return 0, 0, false
	}
	start, n = int64(e.First)*int64(ss), int64(e.Last-e.First+1)*int64(ss)
	return start, n, start >= 0 && n > 0 && start+n <= size
}

// familyOf returns the major version of a build= value ("5.0.0-123" -> "5").
func familyOf(build string) string {
	if build == "" || build[0] < '0' || build[0] > '9' {
		return ""
	}
	return build[:1]
}

// typeName names a type GUID the way partedUtil would.
func partTypeName(t string) string {
	switch t {
	case TypeEFISystem:
		return "EFI system"
	case TypeBasicData:
		return "Basic Data"
	case TypeVMFS:
		return "VMFS"
	case TypeVMKDiagnostic:
		return "vmkDiagnostic"
	case TypeVMFSL:
		return "VMFS-L"
	case TypeVMwareReserved:
		return "VMware reserved"
	}
	return t
}

func joinInts(v []int) string {
	if len(v) == 0 {
		return "nowhere"
	}
	var s []string
	for _, x := range v {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ", ")
}

// String renders the report for people.
func (rep *BootReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "disk: %d bytes, %d-byte sectors; primary GPT %s\n", rep.DiskBytes, rep.SectorSize, map[bool]string{true: "valid", false: "INVALID"}[rep.GPTValid])
	for _, bank := range append(append([]BankReport(nil), rep.Banks...), rep.Others...) {
		where := "where every ESXi loader looks"
		if bank.Slot != 5 && bank.Slot != 6 {
			where = "NOT where ESXi up to 6.7u1 looks; later loaders scan"
		}
		fmt.Fprintf(&b, "entry %d (%s): ", bank.Slot, where)
		if !bank.Present {
			fmt.Fprintf(&b, "%s\n", bank.Reason)
			continue
		}
		fmt.Fprintf(&b, "%s LBA %d-%d", bank.Type, bank.First, bank.Last)
		if bank.UUID != "" {
			fmt.Fprintf(&b, ", bank %s", bank.UUID)
		}
		if bank.BootCfg {
			fmt.Fprintf(&b, ", bootstate=%d build=%s updated=%d", bank.BootState, bank.Build, bank.Updated)
		}
		if bank.Valid {
			b.WriteString(", valid")
			if bank.Slot == rep.Chosen {
				b.WriteString(", CHOSEN")
			}
		} else {
			fmt.Fprintf(&b, ", not a valid bank: %s", bank.Reason)
		}
		b.WriteString("\n")
	}
	for _, l := range rep.Loaders {
		mark := " "
		if l.Applies {
			mark = "*"
		}
		fmt.Fprintf(&b, "loader %s %s\n", mark, l.Text)
	}
	if len(rep.Loaders) > 0 {
		fmt.Fprintf(&b, "         (* = the loader this disk's newest ESXi installed, by its build=)\n")
	}
	for _, m := range rep.Mounts {
		found := m.Found
		if found == "" {
			found = "empty"
		}
		fmt.Fprintf(&b, "entry %d, mounted as %s: %s (%s)\n", m.Slot, m.Want, found, map[bool]string{true: "ok", false: "WRONG"}[m.OK])
	}
	for _, v := range rep.Volumes {
		switch {
		case v.Header == nil:
			fmt.Fprintf(&b, "entry %d %s: %s\n", v.Slot, v.Kind, v.Error)
		default:
			fmt.Fprintf(&b, "entry %d %s %q: made on %s", v.Slot, v.Kind, v.Label, v.Header.Disk)
			if v.Identity != "" {
				fmt.Fprintf(&b, "; %s disk: %s", v.Identity, v.Why)
			}
			b.WriteString("\n")
		}
	}
	for _, w := range rep.WindowsSigns {
		fmt.Fprintf(&b, "windows leftovers (harmless, but a Windows host had this disk): %s\n", w)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(&b, "WARNING: %s\n", w)
	}
	fmt.Fprintf(&b, "verdict: %s\n", rep.Verdict)
	return b.String()
}

// InspectFile is Inspect of the disk or image file at path, its size
// taken by seeking to its end (which works for block devices too).
func InspectFile(path string, sectorSize int) (*BootReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("esxi: %s: %w", path, err)
	}
	return Inspect(f, size, sectorSize)
}
