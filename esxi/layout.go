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
var Versions = []Version{"5.0", "5.5", "6.0", "6.5", "6.7", "7.0"}

// Family returns the major version ("5", "6" or "7"): layouts differ only
// between families.
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
}

// Size returns the partition size in bytes.
func (p Part) Size() int64 { return int64(p.Last-p.First+1) * 512 }

// LBAs returns the first and last LBA in units of sectorSize (512 or 4096).
// Every ESXi boundary is 4 KiB aligned, so the conversion is exact.
func (p Part) LBAs(sectorSize int) (first, last uint64) {
	f := uint64(sectorSize / 512)
	return p.First / f, (p.Last+1)/f - 1
}

// ESXi 5.x/6.x fixed boundaries (512-byte LBAs), from partedUtil getptbl.
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
// creates. They are our reading of VMware's documentation and KB articles,
// rounded: ESXi 6 adds the 2.5 GB diagnostic partition on media over about
// 3.4 GB and scratch only on media over about 8.5 GB; a datastore needs room
// for at least minDatastore after scratch.
const (
	gib                 = int64(1) << 30
	mib                 = int64(1) << 20
	esxi6Diag2MinBytes  = 3400 * mib
	scratchMinBytes     = 8500 * mib
	minDatastoreBytes   = 1 * gib
	esxi7DatastoreBytes = 142 * gib
)

// gptTailSectors is what the backup GPT takes at the end of the disk with
// 128 entries of 128 bytes, in 512-byte sectors (32 array + 1 header).
const gptTailSectors = 33

// Layout returns the partitions ESXi version v writes on a disk of
// diskBytes bytes, in physical disk order. Part.Slot is the entry number
// (1-based index into the entry array), which ESXi does not assign in disk
// order: on 5.x the disk order is 1,5,6,7,8,2,3 and slot 4 stays empty.
// sectorSize is 512 or 4096; 4Kn disks are supported from ESXi 6.5 on only.
func Layout(v Version, diskBytes int64, sectorSize int) ([]Part, error) {
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("esxi: sector size %d: want 512 or 4096", sectorSize)
	}
	if sectorSize == 4096 && (v == "5.0" || v == "5.5" || v == "6.0") {
		return nil, fmt.Errorf("esxi: ESXi %s does not support 4Kn boot disks (6.5 and later do)", v)
	}
	// Last usable 512-byte LBA, rounded down to 4 KiB so 4Kn conversions stay exact.
	tail := int64(gptTailSectors)
	if sectorSize == 4096 {
		tail = 5 * 8 // 4 array sectors + header, in 512-byte units
	}
	lastUsable := diskBytes/512 - tail - 1
	lastUsable = (lastUsable+1)/8*8 - 1
	var parts []Part
	switch v.Family() {
	case "5", "6":
		if lastUsable < storeLast {
			return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s (needs at least %d)", diskBytes, v, (storeLast+1+tail)*512)
		}
		parts = []Part{
			{Slot: 1, Type: TypeEFISystem, Role: RoleSystem, First: sysFirst, Last: sysLast, FS: "fat16", Attrs: 1 << 2},
			{Slot: 5, Type: TypeBasicData, Role: RoleBootBank, First: bank1First, Last: bank1Last, FS: "fat16"},
			{Slot: 6, Type: TypeBasicData, Role: RoleAltBank, First: bank2First, Last: bank2Last, FS: "fat16"},
			{Slot: 7, Type: TypeVMKDiagnostic, Role: RoleCoreDump, First: diagFirst, Last: diagLast, FS: "diag"},
			{Slot: 8, Type: TypeBasicData, Role: RoleStore, First: storeFirst, Last: storeLast, FS: "fat16"},
		}
		scratchFirst, scratchLast, vmfsFirst := uint64(scratch5First), uint64(scratch5Last), uint64(vmfs5First)
		haveScratch := lastUsable >= scratch5Last+int64(minDatastoreBytes/512)
		if v.Family() == "6" {
			scratchFirst, scratchLast, vmfsFirst = scratch6First, scratch6Last, vmfs6First
			if diskBytes > esxi6Diag2MinBytes && lastUsable >= diag2Last {
				parts = append(parts, Part{Slot: 9, Type: TypeVMKDiagnostic, Role: RoleCoreDump, First: diag2First, Last: diag2Last, FS: "diag"})
			}
			haveScratch = diskBytes > scratchMinBytes && lastUsable >= scratch6Last+int64(minDatastoreBytes/512)
		}
		if haveScratch {
			parts = append(parts,
				Part{Slot: 2, Type: TypeBasicData, Role: RoleScratch, First: scratchFirst, Last: scratchLast, FS: "fat32"},
				Part{Slot: 3, Type: TypeVMFS, Role: RoleDatastore, First: vmfsFirst, Last: uint64(lastUsable), FS: "vmfs"})
		}
	case "7":
		parts = layout7(diskBytes, uint64(lastUsable))
		if parts == nil {
			return nil, fmt.Errorf("esxi: %d bytes is too small for ESXi %s (needs at least 8 GB)", diskBytes, v)
		}
	default:
		return nil, fmt.Errorf("esxi: unknown version %q (known: %v)", v, Versions)
	}
	return parts, nil
}

// layout7 is the ESXi 7.0 layout: system boot 64-204863, boot banks sized
// by the medium (500 MB on 8-10 GB, 1 GB up to 32 GB, else 4 GB), ESX-OSData
// (VMFS-L) taking the rest up to 128 GB, and a VMFS datastore on media over
// about 142 GB. Partitions start 1 MiB aligned after the system partition.
func layout7(diskBytes int64, lastUsable uint64) []Part {
	if diskBytes < 8*gib-64*mib { // "8 GB" media are a little short of 8 GiB
		return nil
	}
	bank := uint64(4 * gib / 512)
	switch {
	case diskBytes < 10*gib:
		bank = uint64(500 * mib / 512)
	case diskBytes < 32*gib:
		bank = uint64(1 * gib / 512)
	}
	align := func(lba uint64) uint64 { return (lba + 2047) / 2048 * 2048 }
	p1 := Part{Slot: 1, Type: TypeEFISystem, Role: RoleSystem, First: 64, Last: 204863, FS: "fat16", Attrs: 1 << 2}
	b1 := align(p1.Last + 1)
	p5 := Part{Slot: 5, Type: TypeBasicData, Role: RoleBootBank, First: b1, Last: b1 + bank - 1, FS: "fat16", Label: "BOOTBANK1"}
	b2 := align(p5.Last + 1)
	p6 := Part{Slot: 6, Type: TypeBasicData, Role: RoleAltBank, First: b2, Last: b2 + bank - 1, FS: "fat16", Label: "BOOTBANK2"}
	o := align(p6.Last + 1)
	osLast := lastUsable
	withDatastore := diskBytes > esxi7DatastoreBytes
	if withDatastore {
		osLast = o + uint64(120*gib/512) - 1
	}
	if osLast <= o {
		return nil
	}
	parts := []Part{p1, p5, p6, {Slot: 7, Type: TypeVMFSL, Role: RoleOSData, First: o, Last: osLast, FS: "vmfsl"}}
	if withDatastore {
		d := align(osLast + 1)
		parts = append(parts, Part{Slot: 8, Type: TypeVMFS, Role: RoleDatastore, First: d, Last: lastUsable, FS: "vmfs"})
	}
	return parts
}

// BySlot returns parts sorted by entry number.
func BySlot(parts []Part) []Part {
	out := append([]Part(nil), parts...)
	sort.Slice(out, func(i, j int) bool { return out[i].Slot < out[j].Slot })
	return out
}
