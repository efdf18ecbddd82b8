package esxi

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// LoaderGen is one generation of VMware's ESXi boot loader (esx-boot's
// safeboot), as far as choosing a boot bank goes. The rules: safeboot
// (bootbank.c, get_boot_bank and bank_scan) walks the partitions in entry
// order, keeps each one whose second sector has the "VMWARE FAT16    "
// magic and UUID and whose boot.cfg parses, up to BOOTBANKS_NR of them
// (3 in the current source: "Two is normal, but upgrade scenarios can
// temporarily have three"), and boots the valid one (updated > 0, build
// set, bootstate 0, or 1 which it turns into 2 and boots) with the highest
// updated, the first kept on a tie. Older generations differ:
//   - up to 6.7u1 it looked at entries 5 and 6 only (../shared/BRIEF.md,
//     and measured with that loader in QEMU: BANK6 "not a VMware boot bank"
//     on the incident's compacted disk);
//   - 6.7u2 and 6.7u3 scan, keeping 2 banks; 7.0 keeps 3 (BRIEF.md);
//   - from 7.0 U2 a bank's partition type must be Basic Data or EFI
//     (BRIEF.md; not found in the public source we read).
type LoaderGen struct {
	Name     string `json:"name"`
	Scan     bool   `json:"scan"`      // scans every entry (else entries 5 and 6 only)
	Keep     int    `json:"keep"`      // banks it keeps while scanning
	TypeRule bool   `json:"type_rule"` // a bank must be of type Basic Data or EFI system
}

// LoaderGens lists the generations, oldest first.
var LoaderGens = []LoaderGen{
	{Name: "ESXi 5.0 to 6.7u1", Keep: 2},
	{Name: "ESXi 6.7u2 and 6.7u3", Scan: true, Keep: 2},
	{Name: "ESXi 7.0 to 7.0u1", Scan: true, Keep: 3},
	{Name: "ESXi 7.0u2 and later", Scan: true, Keep: 3, TypeRule: true},
}

// First builds of the updates whose loader changed: 6.7 U2 is build
// 13006603, 7.0 U2 build 17630552 (VMware's build number list, KB 2143832,
// from memory: not confirmed here). Patches between the updates are taken
// to carry the older loader.
const (
	build67u2 = 13006603
	build70u2 = 17630552
)

// LoaderGenOf returns the index in LoaderGens of the loader an ESXi of
// build= value build installs ("6.7.0-8169922" -> 0), -1 when unknown.
func LoaderGenOf(build string) int {
	ver, num, _ := strings.Cut(build, "-")
	n, err := strconv.Atoi(num)
	if err != nil {
		n = 0
	}
	f := strings.SplitN(ver, ".", 3)
	if len(f) < 2 {
		return -1
	}
	major, err1 := strconv.Atoi(f[0])
	minor, err2 := strconv.Atoi(f[1])
	switch {
	case err1 != nil || err2 != nil || major < 5:
		return -1
	case major < 6 || (major == 6 && minor < 7):
		return 0
	case major == 6:
		if n >= build67u2 {
			return 1
		}
		return 0
	case major == 7 && minor == 0 && n < build70u2:
		return 2
	}
	return 3
}

// LoaderReport is what one loader generation would boot.
type LoaderReport struct {
	Loader     string `json:"loader"`
	Applies    bool   `json:"applies"`    // the loader this disk's newest ESXi installed
	Considered []int  `json:"considered"` // entries it keeps as boot banks
	Chosen     int    `json:"chosen_slot"`
	UUID       string `json:"uuid,omitempty"`
	Build      string `json:"build,omitempty"`
	Updated    int    `json:"updated,omitempty"`
	Text       string `json:"text"`
}

// choose applies g to the bank candidates (every entry that is or may be
// a boot bank, checked by checkBank), in entry order.
func (g LoaderGen) choose(cands []BankReport) LoaderReport {
	lr := LoaderReport{Loader: g.Name}
	var kept []BankReport
	for _, b := range cands {
		if !g.Scan && b.Slot != 5 && b.Slot != 6 {
			continue
		}
		if !b.Scanned || (g.TypeRule && !b.TypeOK) {
			continue
		}
		if g.Scan && len(kept) >= g.Keep {
			break
		}
		kept = append(kept, b)
		lr.Considered = append(lr.Considered, b.Slot)
	}
	best := -1
	for i, b := range kept {
		if b.Valid && (best < 0 || b.Updated > kept[best].Updated) {
			best = i
		}
	}
	where := "entries 5 and 6"
	if g.Scan {
		where = fmt.Sprintf("the first %d boot banks found by content in entry order", g.Keep)
		if g.TypeRule {
			where += " (Basic Data or EFI type only)"
		}
	}
	if best < 0 {
		kept := "none found"
		if len(lr.Considered) > 0 {
			kept = "found: entries " + joinInts(lr.Considered)
		}
		lr.Text = fmt.Sprintf("%s would boot nothing: no valid boot bank among %s (%s)", g.Name, where, kept)
		return lr
	}
	b := kept[best]
	lr.Chosen, lr.UUID, lr.Build, lr.Updated = b.Slot, b.UUID, b.Build, b.Updated
	lr.Text = fmt.Sprintf("%s would boot entry %d (bank %s, build %s, updated=%d), the valid bank with the highest updated= among %s",
		g.Name, b.Slot, b.UUID, b.Build, b.Updated, where)
	return lr
}

// applyLoaders fills rep.Loaders, rep.Chosen and rep.Bootable from the
// bank candidates, and adds a problem when the loader that applies does
// not boot the newest bank.
func (rep *BootReport) applyLoaders(cands []BankReport) {
	sort.Slice(cands, func(i, j int) bool { return cands[i].Slot < cands[j].Slot })
	newest := -1 // the newest valid bank anywhere
	for i, b := range cands {
		if b.Valid && (newest < 0 || b.Updated > cands[newest].Updated) {
			newest = i
		}
	}
	gen := -1
	if newest >= 0 {
		gen = LoaderGenOf(cands[newest].Build)
	}
	if gen < 0 {
		gen = 0
	}
	for i, g := range LoaderGens {
		lr := g.choose(cands)
		lr.Applies = i == gen
		rep.Loaders = append(rep.Loaders, lr)
	}
	lr := rep.Loaders[gen]
	rep.Loader = lr.Loader
	rep.Chosen = lr.Chosen
	rep.Bootable = lr.Chosen != 0
	if lr.Chosen != 0 {
		rep.Family = familyOf(lr.Build)
	}
	if newest < 0 {
		return
	}
	nb := cands[newest]
	if rep.Family == "" {
		rep.Family = familyOf(nb.Build)
	}
	if lr.Chosen != 0 && nb.Updated <= lr.Updated {
		return
	}
	var where string
	switch {
	case !LoaderGens[gen].Scan:
		where = fmt.Sprintf("the newest boot bank %s (build %s, updated=%d) is at entry %d, not where ESXi 5/6 looks (entries 5 and 6)", nb.UUID, nb.Build, nb.Updated, nb.Slot)
	case LoaderGens[gen].TypeRule && !nb.TypeOK:
		where = fmt.Sprintf("the newest boot bank %s (build %s, updated=%d) at entry %d has type %s, which %s does not accept for a boot bank", nb.UUID, nb.Build, nb.Updated, nb.Slot, nb.Type, lr.Loader)
	default:
		where = fmt.Sprintf("the newest boot bank %s (build %s, updated=%d) at entry %d is not among the first %d boot banks %s keeps (entries %s)", nb.UUID, nb.Build, nb.Updated, nb.Slot, LoaderGens[gen].Keep, lr.Loader, joinInts(lr.Considered))
	}
	if lr.Chosen != 0 {
		where = fmt.Sprintf("ESXi would boot the older bank %s (build %s, updated=%d) at entry %d; ", lr.UUID, lr.Build, lr.Updated, lr.Chosen) + where
	}
	rep.Problems = append(rep.Problems, where)
}

// LoadersDiffer reports whether the loader generations would boot
// different entries: the disk boots differently depending on the ESXi
// version installed, as on a compacted table.
func (rep *BootReport) LoadersDiffer() bool {
	for _, l := range rep.Loaders {
		if l.Chosen != rep.Loaders[0].Chosen {
			return true
		}
	}
	return false
}

// BankLines says in plain words each boot bank's build=, updated= and
// bootstate=, and which bank the loader that applies picks and why.
func (rep *BootReport) BankLines() []string {
	var out []string
	for _, b := range append(append([]BankReport(nil), rep.Banks...), rep.Others...) {
		if !b.Present || b.UUID == "" {
			continue
		}
		state := "valid"
		if !b.Valid {
			state = "not bootable: " + b.Reason
		}
		if b.BootCfg {
			out = append(out, fmt.Sprintf("boot bank at entry %d (%s): build=%s updated=%d bootstate=%d, %s", b.Slot, b.UUID, b.Build, b.Updated, b.BootState, state))
		} else {
			out = append(out, fmt.Sprintf("boot bank at entry %d (%s): %s", b.Slot, b.UUID, state))
		}
	}
	for _, l := range rep.Loaders {
		if l.Applies {
			out = append(out, "this disk's loader: "+l.Text)
		}
	}
	return out
}
