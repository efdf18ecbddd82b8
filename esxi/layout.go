// Package esxi holds the facts about VMware ESXi boot disks: the partition
// layouts each ESXi version writes (the one source of truth, used both to
// build test images and to recognise a disk without a reference), the boot
// bank rules, and image building.
package esxi

import (
	"fmt"
	"sort"
)

// Version is an ESXi release whose installer layout we know, e.g. "5.0".
type Version string

// Versions lists every version Layout understands, oldest first.
var Versions = []Version{"5.0", "5.5", "6.0", "6.5", "6.7", "7.0", "8.0"}

// Family returns the major version ("5", "6", "7" or "8"). 5.x and 6.x
// differ in their tables; 7.0 and 8.0 write the same table (8.0 wants a
// larger disk).
func (v Version) Family() string {
	if len(v) == 0 {
		return ""
	}
	return string(v[:1])
}

// Partition type GUIDs ESXi uses, in the canonical text form.
const (
	TypeEFISystem      = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	TypeBasicData      = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" // partedUtil: linuxNative
	TypeVMFS           = "AA31E02A-400F-11DB-9590-000C2911D1B8"
	TypeVMKDiagnostic  = "9D275380-40AD-11DB-BF97-000C2911D1B8"
	TypeVMFSL          = "4EB2EA39-7855-4790-A79E-FAE495E21F8D" // ESXi 7 OSData
	TypeVMwareReserved = "9198EFFC-31C0-11DB-8F78-000C2911D1B8"
)

// Role says what ESXi uses a partition for.
type Role string

// The roles of ESXi partitions.
const (
	RoleSystem    Role = "system"      // EFI system / boot loader
	RoleBootBank  Role = "bootbank"    // primary boot bank
	RoleAltBank   Role = "altbootbank" // alternate boot bank
	RoleCoreDump  Role = "coredump"    // vmkDiagnostic
	RoleStore     Role = "store"       // store/locker (ESXi 5/6)
	RoleScratch   Role = "scratch"     // scratch (ESXi 5/6)
	RoleDatastore Role = "datastore"   // VMFS datastore
	RoleOSData    Role = "osdata"      // ESX-OSData, VMFS-L (ESXi 7)
)

// Part is one partition of an ESXi layout. LBAs are in 512-byte sectors
// (Sectors512); use Part.LBAs to get them for another sector size.
type Part struct {
	Slot  int    // 1-based entry number in the GPT entry array
	Type  string // type GUID, canonical text form
	Role  Role
	First uint64 // first LBA, 512-byte units
	Last  uint64 // last LBA, 512-byte units, inclusive
	FS    string // "fat16", "fat12", "fat32", "vmfs", "vmfsl", "diag" or ""
	Label string // FAT volume label, where ESXi sets one
	Attrs uint64 // GPT attribute bits
	Name  string // GPT entry name (7.x/8.x name their entries; 5.x/6.x do not)
}

// Size returns the partition size in bytes.
func (p Part) Size() int64 { return int64(p.Last-p.First+1) * 512 }

// LBAs returns the first and last LBA in units of sectorSize (512 or 4096).
// Every ESXi boundary is 4 KiB aligned, so the conversion is exact.
func (p Part) LBAs(sectorSize int) (first, last uint64) {
	f := uint64(sectorSize / 512)
	return p.First / f, (p.Last+1)/f - 1
}

// Media is the kind of medium ESXi is installed on; the installers lay out
// flash media (USB sticks, SD cards) differently from disks.
type Media string

// The media an installer tells apart.
const (
	// MediaDisk: a disk ESXi may put VMFS on (HDD, SSD, NVMe, a RAID
	// logical disk). The default.
	MediaDisk Media = "disk"
	// MediaUSB: a USB stick or SD card. 5.x/6.x create neither scratch nor
	// a datastore there; 7.x/8.x may put only the system boot partition and
	// the two boot banks there (1, 5, 6), with OSDATA on another disk or a
	// RAM disk.
	MediaUSB Media = "usb"
)

// The values of the ESXi 7.0 U1c+ boot option systemMediaSize=, which caps
// the system partitions (system boot, boot banks, OSDATA) at about 33, 69
// or 138 GB, or lets OSDATA take the whole medium (max).
// Source: VMware KB 81166 ("Boot option to configure the size of ESXi
// system partitions"), as quoted in issue 10 and ../shared/BRIEF.md.
const (
	SystemMediaMin     = "min"
	SystemMediaSmall   = "small"
	SystemMediaDefault = "default"
	SystemMediaMax     = "max"
)

// SystemMediaSizes lists the systemMediaSize= values, smallest first.
var SystemMediaSizes = []string{SystemMediaMin, SystemMediaSmall, SystemMediaDefault, SystemMediaMax}

// Spec says which installation Layout describes: the options an ESXi
// installer has.
type Spec struct {
	Version   Version // "5.0" ... "8.0"
	DiskBytes int64   // size of the medium in bytes
	// SectorSize is the logical sector size, 512 (0 means 512) or 4096
	// (4Kn, from ESXi 6.5 on).
	SectorSize int
	// PhysicalSectorSize is 4096 for a 512e disk (512-byte logical
	// sectors on 4 KiB physical ones); 0 means the same as SectorSize.
	PhysicalSectorSize int
	Media              Media // "" means MediaDisk
	// SystemMediaSize is systemMediaSize= (7.0 and 8.0 only): "" or
	// "default", "min", "small", "max".
	SystemMediaSize string
	// UpgradedFrom is the version the disk was first installed with when
	// it was upgraded since: an upgrade keeps the old table (a 6.x host
	// upgraded from 5.x still has the 5.x layout). "" means a fresh
	// install.
	UpgradedFrom Version
}

func (s Spec) normalized() (Spec, error) {
	if s.SectorSize == 0 {
		s.SectorSize = 512
	}
	if s.PhysicalSectorSize == 0 {
		s.PhysicalSectorSize = s.SectorSize
	}
	if s.Media == "" {
		s.Media = MediaDisk
	}
	if s.SystemMediaSize == "" {
		s.SystemMediaSize = SystemMediaDefault
	}
	if !knownVersion(s.Version) {
		return s, fmt.Errorf("esxi: unknown version %q (known: %v)", s.Version, Versions)
	}
	if s.SectorSize != 512 && s.SectorSize != 4096 {
		return s, fmt.Errorf("esxi: sector size %d: want 512 or 4096", s.SectorSize)
	}
	if s.PhysicalSectorSize != s.SectorSize && (s.SectorSize != 512 || s.PhysicalSectorSize != 4096) {
		return s, fmt.Errorf("esxi: physical sector size %d with %d-byte logical sectors: want the same, or 4096 with 512 (512e)", s.PhysicalSectorSize, s.SectorSize)
	}
	// 4Kn boot disks: supported from ESXi 6.5 (UEFI only); VMware KB 2091600
	// "Support statement for 512e and 4K Native drives". Not checked here
	// against a partedUtil output of a 4Kn install.
	if s.SectorSize == 4096 && (s.Version == "5.0" || s.Version == "5.5" || s.Version == "6.0") {
		return s, fmt.Errorf("esxi: ESXi %s does not support 4Kn boot disks (6.5 and later do)", s.Version)
	}
	if s.Media != MediaDisk && s.Media != MediaUSB {
		return s, fmt.Errorf("esxi: medium %q: want disk or usb", s.Media)
	}
	okSize := false
	for _, v := range SystemMediaSizes {
		okSize = okSize || v == s.SystemMediaSize
	}
	if !okSize {
		return s, fmt.Errorf("esxi: systemMediaSize %q: want one of %v", s.SystemMediaSize, SystemMediaSizes)
	}
	fam := s.Version.Family()
	if s.SystemMediaSize != SystemMediaDefault && fam != "7" && fam != "8" {
		return s, fmt.Errorf("esxi: systemMediaSize= is an option of ESXi 7.0 U1c and later, not of %s", s.Version)
	}
	if s.UpgradedFrom != "" {
		if !knownVersion(s.UpgradedFrom) {
			return s, fmt.Errorf("esxi: upgraded from unknown version %q (known: %v)", s.UpgradedFrom, Versions)
		}
		if s.UpgradedFrom > s.Version {
			return s, fmt.Errorf("esxi: %s cannot be upgraded from the newer %s", s.Version, s.UpgradedFrom)
		}
		from := s.UpgradedFrom.Family()
		if (fam == "7" || fam == "8") && from != "7" && from != "8" {
			// The 6.x -> 7.0 upgrade repartitions the disk (VMware blog
			// "vSphere 7 - System Storage When Upgrading", 2020); we do not
			// know its exact result.
			return s, fmt.Errorf("esxi: the layout of %s upgraded from %s is not known here (the upgrade to 7.0 repartitions the disk)", s.Version, s.UpgradedFrom)
		}
	}
	return s, nil
}

func knownVersion(v Version) bool {
	for _, k := range Versions {
		if k == v {
			return true
		}
	}
	return false
}

// layoutFamily is the family whose table the disk carries: the one it was
// first installed with when an upgrade kept the table.
func (s Spec) layoutFamily() string {
	if s.UpgradedFrom != "" {
		return s.UpgradedFrom.Family()
	}
	return s.Version.Family()
}

// ESXi 5.x/6.x fixed boundaries (512-byte LBAs). Source: partedUtil getptbl
// of 5.x and 6.x installs (../shared/BRIEF.md; the 6.0 one on a 16 GiB disk
// is printed in full at vinfrastructure.it/2015/05/vmware-esxi-6-0-partitions:
// 1 64-8191, 5 8224-520191, 6 520224-1032191, 7 1032224-1257471,
// 8 1257504-1843199, 9 1843200-7086079, 2 7086080-15472639, 3 15472640-33554398).
const (
	sysFirst, sysLast           = 64, 8191
	bank1First, bank1Last       = 8224, 520191
	bank2First, bank2Last       = 520224, 1032191
	diagFirst, diagLast         = 1032224, 1257471
	storeFirst, storeLast       = 1257504, 1843199
	diag2First, diag2Last       = 1843200, 7086079  // 6.x only
	scratch5First, scratch5Last = 1843200, 10229759 // 5.x
	scratch6First, scratch6Last = 7086080, 15472639 // 6.x
	vmfs5First                  = 10229760
	vmfs6First                  = 15472640
)

// Size thresholds (bytes) deciding which optional partitions an installer
// creates.
const (
	gib = int64(1) << 30
	mib = int64(1) << 20
	gb  = int64(1000 * 1000 * 1000)
	// ESXi 6 adds the 2.5 GB vmkDiagnostic (9) on media "larger than 3.4
	// GB" and scratch (2) on media "larger than 8.5 GB" (VMware ESXi 7.0/8.0
	// Installation and Setup, figure "ESXi 6.x system storage layout").
	// Whether the installer means GB or GiB is not confirmed; these are
	// the values this package has always used.
	esxi6Diag2MinBytes = 3400 * mib
	scratchMinBytes    = 8500 * mib
	// minDatastoreBytes: the room after scratch a 5.x/6.x installer wants
	// before it creates a datastore. Not confirmed (our estimate).
	minDatastoreBytes = 1 * gib
)

// gptTailSectors is what the backup GPT takes at the end of the disk with
// 128 entries of 128 bytes, in 512-byte sectors (32 array + 1 header).
const gptTailSectors = 33

// lastUsable512 returns the last LBA (512-byte units) an installer gives a
// partition that takes the rest of the disk. The 5.x/6.x installers end the
// datastore at the last usable sector (disk - 34 sectors) on 512n disks
// (partedUtil, above: 3 ends at 33554398 on a disk of 33554432 sectors) and
// round down to 4 KiB on 4Kn and 512e media (issue 10, from the field). On
// 4Kn the backup GPT takes 4 array sectors + 1 header of 4 KiB. We assume
// 7.x/8.x end OSDATA and the datastore the same way (not confirmed).
func (s Spec) lastUsable512() int64 {
	if s.SectorSize == 4096 {
		return (s.DiskBytes/4096-5)*8 - 1
	}
	last := s.DiskBytes/512 - gptTailSectors - 1
	if s.PhysicalSectorSize == 4096 {
		last = (last+1)/8*8 - 1
	}
	return last
}

// Layout returns the partitions a fresh ESXi v install writes on a disk of
// diskBytes bytes with sectorSize-byte sectors (512n or 4Kn); see LayoutFor.
func Layout(v Version, diskBytes int64, sectorSize int) ([]Part, error) {
	return LayoutFor(Spec{Version: v, DiskBytes: diskBytes, SectorSize: sectorSize})
}

// LayoutFor returns the partitions the installer of s.Version writes as s
// says, in physical disk order. Part.Slot is the entry number (1-based
// index into the entry array), which ESXi does not assign in disk order: on
// 5.x the disk order is 1,5,6,7,8,2,3 and slot 4 stays empty.
func LayoutFor(s Spec) ([]Part, error) {
	s, err := s.normalized()
	if err != nil {
		return nil, err
	}
	last := s.lastUsable512()
	switch fam := s.layoutFamily(); fam {
	case "5", "6":
		return layout56(s, fam, last)
	default:
		return layout78(s, last)
	}
}

// layout56 is the 5.x/6.x layout: fixed boundaries, optional partitions by
// medium and size.
func layout56(s Spec, fam string, lastUsable int64) ([]Part, error) {
	if lastUsable < storeLast {
		return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s (needs at least %d)", s.DiskBytes, s.Version, (storeLast+1+gptTailSectors)*512)
	}
	parts := []Part{
		// partedUtil shows the system partition with attribute 128; we set
		// the GPT "legacy BIOS bootable" bit (2), partedUtil's rendering of
		// which is not confirmed.
		{Slot: 1, Type: TypeEFISystem, Role: RoleSystem, First: sysFirst, Last: sysLast, FS: "fat16", Attrs: 1 << 2},
		{Slot: 5, Type: TypeBasicData, Role: RoleBootBank, First: bank1First, Last: bank1Last, FS: "fat16"},
		{Slot: 6, Type: TypeBasicData, Role: RoleAltBank, First: bank2First, Last: bank2Last, FS: "fat16"},
		{Slot: 7, Type: TypeVMKDiagnostic, Role: RoleCoreDump, First: diagFirst, Last: diagLast, FS: "diag"},
		{Slot: 8, Type: TypeBasicData, Role: RoleStore, First: storeFirst, Last: storeLast, FS: "fat16"},
	}
	scratchFirst, scratchLast, vmfsFirst := int64(scratch5First), int64(scratch5Last), int64(vmfs5First)
	haveScratch := lastUsable >= scratch5Last+minDatastoreBytes/512
	if fam == "6" {
		scratchFirst, scratchLast, vmfsFirst = scratch6First, scratch6Last, vmfs6First
		// 6.x on any medium over 3.4 GB, USB/SD included (partedUtil of
		// 6.x USB installs: 1,5,6,7,8,9; issue 10).
		if s.DiskBytes > esxi6Diag2MinBytes && lastUsable >= diag2Last {
			parts = append(parts, Part{Slot: 9, Type: TypeVMKDiagnostic, Role: RoleCoreDump, First: diag2First, Last: diag2Last, FS: "diag"})
		}
		haveScratch = s.DiskBytes > scratchMinBytes && lastUsable >= scratch6Last+minDatastoreBytes/512
	}
	// No scratch and no datastore on USB/SD flash: VMware KB 1033696
	// (5.x: "the installer does not create a scratch partition on these
	// devices"), and the 6.x figure above ("not created on USB flash drive").
	if haveScratch && s.Media == MediaDisk {
		parts = append(parts,
			Part{Slot: 2, Type: TypeBasicData, Role: RoleScratch, First: uint64(scratchFirst), Last: uint64(scratchLast), FS: "fat32"},
			Part{Slot: 3, Type: TypeVMFS, Role: RoleDatastore, First: uint64(vmfsFirst), Last: uint64(lastUsable), FS: "vmfs"})
	}
	return parts, nil
}

// ESXi 7.0/8.0 boundaries and sizes.
const (
	// System boot 64-204863 (100 MB): partedUtil getptbl of 7.0 and 8.0
	// installs (issue 10, ../shared/BRIEF.md).
	sys7First, sys7Last = 64, 204863
	// Boot banks: 4095 MiB each on media of 32 GB and more (partedUtil:
	// 5 = 208896-8595455, 6 = 8597504-16984063), 1 GiB on 10-32 GB media
	// (partedUtil of 8.0: 5 = 208896-2306047), "500 MB" on 8-10 GB media
	// (VMware ESXi Installation and Setup, table "ESXi System Storage
	// Sizes"; the exact LBAs are not confirmed: we take 500 MiB).
	bank7Big   = 4095 * mib
	bank7Mid   = 1024 * mib
	bank7Small = 500 * mib
	// The media size classes of that table. The table says GB; whether
	// the installer compares GB or GiB is not confirmed: we take GB.
	media7Mid = 10 * gb
	media7Big = 32 * gb
	// media7Min: "ESXi requires a boot disk of at least 8 GB for USB or SD
	// devices" (VMware docs). Media sold as 8 GB are often a little
	// smaller; what the installer accepts exactly is not confirmed.
	media7Min = 7600 * 1000 * 1000
	// media8DiskMin: 8.0 refuses disks too small for OSDATA (a 10 GB disk
	// failed, 40 GB worked: ../shared/BRIEF.md); VMware's docs ask for 32
	// GB on disks other than USB/SD. We take 32 GB; the exact limit is not
	// confirmed.
	media8DiskMin = 32 * gb
	// datastore7MinBytes: a datastore follows OSDATA only with at least
	// 4 GB free after the system partitions ("A local VMFS datastore is
	// only created if the local disk device has at least 4 GB additional
	// free space", VMware Cloud Foundation 4.x design guide). With the
	// default 128 GiB cap that is media over 132 GiB = 141.7 GB, the docs'
	// "larger than 142 GB".
	datastore7MinBytes = 4 * gib
)

// systemCap returns where systemMediaSize= ends OSDATA (bytes from the
// start of the disk), 0 for no cap (max). OSDATA ends at exactly 128 GiB
// (LBA 268435455) by default (partedUtil, issue 10). min and small: KB
// 81166 says 33 and 69 GB; we take 32 and 64 GiB (34.4 and 68.7 GB), which
// agree with the one field report we have (an 80 GiB disk with min: OSDATA
// 23.75 GiB and a 47.75 GiB datastore, as VMFS reports capacity), but the
// exact LBAs are not confirmed.
func systemCap(v string) int64 {
	switch v {
	case SystemMediaMin:
		return 32 * gib
	case SystemMediaSmall:
		return 64 * gib
	case SystemMediaMax:
		return 0
	}
	return 128 * gib
}

// next7 returns where the 7.x/8.x installer starts the partition after one
// ending at last: 1 MiB after the next 1 MiB boundary past the end (5 at
// 208896 after 204863, 6 at 8597504 after 8595455, 7 at 16986112 after
// 16984063, 8 at 268437504 after 268435455: partedUtil, issue 10).
func next7(last uint64) uint64 {
	return (last+1+2047)/2048*2048 + 2048
}

// layout78 is the 7.0/8.0 layout: system boot, boot banks sized by the
// medium, OSDATA (VMFS-L) up to the systemMediaSize cap, and a datastore
// when enough is left. Entry names BOOT, BOOTBANK1, BOOTBANK2, OSDATA,
// datastore1 (partedUtil, issue 10).
func layout78(s Spec, lastUsable int64) ([]Part, error) {
	min := int64(media7Min)
	if s.Version.Family() == "8" && s.Media == MediaDisk {
		min = media8DiskMin
	}
	if s.DiskBytes < min {
		return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s on a %s (needs at least %d GB)", s.DiskBytes, s.Version, s.Media, (min+gb-1)/gb)
	}
	bank := uint64(bank7Big / 512)
	switch {
	case s.DiskBytes < media7Mid:
		bank = uint64(bank7Small / 512)
	case s.DiskBytes < media7Big:
		bank = uint64(bank7Mid / 512)
	}
	p1 := Part{Slot: 1, Type: TypeEFISystem, Role: RoleSystem, First: sys7First, Last: sys7Last, FS: "fat16", Attrs: 1 << 2, Name: "BOOT"}
	b1 := next7(p1.Last)
	p5 := Part{Slot: 5, Type: TypeBasicData, Role: RoleBootBank, First: b1, Last: b1 + bank - 1, FS: "fat16", Label: "BOOTBANK1", Name: "BOOTBANK1"}
	b2 := next7(p5.Last)
	p6 := Part{Slot: 6, Type: TypeBasicData, Role: RoleAltBank, First: b2, Last: b2 + bank - 1, FS: "fat16", Label: "BOOTBANK2", Name: "BOOTBANK2"}
	parts := []Part{p1, p5, p6}
	if s.Media == MediaUSB {
		// 7.x on USB/SD: only 1, 5, 6 (OSDATA on another disk or a RAM
		// disk): issue 10 and VMware's docs ("For storage media such as USB
		// or SD devices, the ESX-OSData partition is created on a high
		// endurance storage device such as an HDD or SSD").
		if int64(p6.Last) > lastUsable {
			return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s", s.DiskBytes, s.Version)
		}
		return parts, nil
	}
	o := next7(p6.Last)
	osLast := uint64(lastUsable)
	if c := systemCap(s.SystemMediaSize); c > 0 && uint64(c/512-1) < osLast {
		osLast = uint64(c/512 - 1)
	}
	if osLast <= o {
		return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s (no room for OSDATA)", s.DiskBytes, s.Version)
	}
	parts = append(parts, Part{Slot: 7, Type: TypeVMFSL, Role: RoleOSData, First: o, Last: osLast, FS: "vmfsl", Name: "OSDATA"})
	if d := next7(osLast); osLast < uint64(lastUsable) && int64(uint64(lastUsable)-d+1)*512 >= datastore7MinBytes {
		parts = append(parts, Part{Slot: 8, Type: TypeVMFS, Role: RoleDatastore, First: d, Last: uint64(lastUsable), FS: "vmfs", Name: "datastore1"})
	}
	return parts, nil
}

// BySlot returns parts sorted by entry number.
func BySlot(parts []Part) []Part {
	out := append([]Part(nil), parts...)
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out
}
