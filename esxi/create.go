package esxi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/esxi-rescue/rescue/esxi/stubkernel"
)

// CreateOptions says which ESXi boot disk Create builds.
type CreateOptions struct {
	Version    Version // "5.0" ... "8.0"
	Size       int64   // disk size in bytes (the file is sparse)
	SectorSize int     // 512 (0 means 512) or 4096 (ESXi 6.5 and later)
	// Media, SystemMediaSize and UpgradedFrom are the installer's options
	// (see Spec): "" means a disk, the default size, a fresh install.
	Media           Media
	SystemMediaSize string
	UpgradedFrom    Version
	Seed            int64 // every GUID, UUID, volume ID and filler byte derives from it
	// AltBank is what the alternate boot bank (entry 6) holds: "older"
	// (default) a valid boot.cfg with a smaller updated= than the primary
	// bank, as after an upgrade; "empty" a formatted bank with its UUID but
	// no files, as after a fresh install.
	AltBank string
	// DiskID is the disk identity written into the VMFS/VMFS-L LVM
	// headers (the disk the volumes were "made on"); nil means
	// opt.DefaultDiskID().
	DiskID *SCSIDiskID
	// Build is the primary bank's build= ("" = Builds[Version]), e.g.
	// "6.7.0-13006603" for a 6.7 U2 host, whose loader scans for banks.
	Build     string
	Overwrite bool // replace an existing file at path
}

// VMFSMagic is the little-endian 32-bit value at byte 1 MiB of a VMFS (and,
// in our images, VMFS-L) partition.
const VMFSMagic = 0xC001D00D

// DataBlockSize is the size of each recognisable block ("VM data" on a
// datastore, "OS data" on OSDATA, the coredump header on vmkDiagnostic).
const DataBlockSize = 4096

func (o CreateOptions) normalized() (CreateOptions, error) {
	if o.SectorSize == 0 {
		o.SectorSize = 512
	}
	if o.AltBank == "" {
		o.AltBank = "older"
	}
	if o.AltBank != "older" && o.AltBank != "empty" {
		return o, fmt.Errorf("esxi: alternate bank %q: want older or empty", o.AltBank)
	}
	if _, ok := Builds[o.Version]; !ok {
		return o, fmt.Errorf("esxi: unknown version %q (known: %v)", o.Version, Versions)
	}
	if o.Build != "" && (!strings.HasPrefix(o.Build, string(o.Version)+".") || !strings.Contains(o.Build, "-")) {
		return o, fmt.Errorf("esxi: build %q does not look like a build of ESXi %s (e.g. %s)", o.Build, o.Version, Builds[o.Version])
	}
	if o.Size%int64(o.SectorSize) != 0 {
		return o, fmt.Errorf("esxi: size %d is not a multiple of the sector size %d", o.Size, o.SectorSize)
	}
	return o, nil
}

// Spec returns the layout specification of the image Create builds.
func (o CreateOptions) Spec() Spec {
	return Spec{Version: o.Version, DiskBytes: o.Size, SectorSize: o.SectorSize,
		Media: o.Media, SystemMediaSize: o.SystemMediaSize, UpgradedFrom: o.UpgradedFrom}
}

// BankUUID returns the 16-byte UUID (as 32 lower-case hex digits, the form
// of bootUUID=) that Create writes to the boot bank with entry number slot
// (5 or 6).
func (o CreateOptions) BankUUID(slot int) string {
	return hex.EncodeToString(ids{o.Seed}.bytes("bank"+strconv.Itoa(slot), 16))
}

// DefaultDiskID is the disk identity Create writes into the VMFS and
// VMFS-L headers unless DiskID says otherwise: a made-up SCSI disk with a
// 16-byte NAA (type 6) identifier derived from the seed.
func (o CreateOptions) DefaultDiskID() SCSIDiskID {
	naa := ids{o.Seed}.bytes("naa", 16)
	naa[0] = 0x60 | naa[0]&0x0F
	return SCSIDiskID{Type: 3, Len: 16, DeviceType: 0, SCSILevel: 6, Vendor: "ESXISTUB", Model: "Stub Disk", Revision: "1.0", ID: naa}
}

// DiskGUID returns the disk GUID Create writes into the GPT headers.
func (o CreateOptions) DiskGUID() string { return ids{o.Seed}.guid("disk") }

// PartGUID returns the unique partition GUID Create gives the entry slot.
func (o CreateOptions) PartGUID(slot int) string {
	return ids{o.Seed}.guid("part" + strconv.Itoa(slot))
}

// Updated returns the updated= value of the bank at slot, 0 for none.
func (o CreateOptions) Updated(slot int) int {
	switch {
	case slot == 5:
		return 2
	case slot == 6 && o.AltBank != "empty":
		return 1
	}
	return 0
}

// Create writes a sparse disk image of opt.Size bytes at path with exactly
// the GPT layout ESXi opt.Version writes (see LayoutFor and opt.Spec) and contents an ESXi
// boot loader accepts: FAT system partition with EFI/BOOT files, two boot
// banks (magic + UUID at their second sector, boot.cfg, the stub kernel
// b.b00, modules), store/locker with packages/, scratch, vmkDiagnostic
// headers, a VMFS datastore (magic at 1 MiB, recognisable "VM data" blocks)
// and on 7.0 an OSDATA VMFS-L. The same options always give the same bytes.
func Create(path string, opt CreateOptions) (err error) {
	opt, err = opt.normalized()
	if err != nil {
		return err
	}
	parts, err := LayoutFor(opt.Spec())
	if err != nil {
		return err
	}
	if opt.Overwrite {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("esxi: %w", err)
		}
	} else if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("esxi: %s exists (overwrite not requested)", path)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	defer reproducibleTimes()()
	d, err := diskfs.Create(path, opt.Size, diskfs.SectorSize(opt.SectorSize))
	if err != nil {
		return fmt.Errorf("esxi: creating %s: %w", path, err)
	}
	defer d.Close()
	id := ids{opt.Seed}
	table := &gpt.Table{
		LogicalSectorSize:  opt.SectorSize,
		PhysicalSectorSize: opt.SectorSize,
		ProtectiveMBR:      true,
		GUID:               opt.DiskGUID(),
	}
	for _, p := range BySlot(parts) {
		first, last := p.LBAs(opt.SectorSize)
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index:      p.Slot,
			Start:      first,
			End:        last,
			Size:       (last - first + 1) * uint64(opt.SectorSize),
			Type:       gpt.Type(p.Type),
			GUID:       opt.PartGUID(p.Slot),
			Name:       p.Name,
			Attributes: p.Attrs,
		})
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("esxi: writing GPT: %w", err)
	}
	if opt.SectorSize != 512 {
		// go-diskfs issue 405: re-read so partition offsets use 4 KiB sectors.
		if _, err := d.GetPartitionTable(); err != nil {
			return fmt.Errorf("esxi: re-reading GPT: %w", err)
		}
	}
	w, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := fillPart(d.Backend, opt, id, p); err != nil {
			return fmt.Errorf("esxi: partition %d (%s): %w", p.Slot, p.Role, err)
		}
		if strings.HasPrefix(p.FS, "fat") {
			if _, _, err := fatCluster2(w, int64(p.First)*512, 0); err != nil {
				return fmt.Errorf("esxi: partition %d: freeing cluster 2: %w", p.Slot, err)
			}
			if err := fixFAT32(w, int64(p.First)*512); err != nil {
				return fmt.Errorf("esxi: partition %d: %w", p.Slot, err)
			}
		}
	}
	f, ok := w.(*os.File)
	if !ok {
		f, err = d.Backend.Sys()
		if err != nil {
			return fmt.Errorf("esxi: no file behind the go-diskfs backend: %w", err)
		}
	}
	if err := punchZeros(f); err != nil {
		return fmt.Errorf("esxi: making %s sparse: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("esxi: %w", err)
	}
	return nil
}

// reproducibleTimes makes go-diskfs stamp every directory entry with
// fileTime: it honours SOURCE_DATE_EPOCH (util/timestamp), which is process
// wide, so Create holds a lock and restores the old value when done.
func reproducibleTimes() (restore func()) {
	epochMu.Lock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(fileTime.Unix(), 10))
	return func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
		epochMu.Unlock()
	}
}

var epochMu sync.Mutex

// fillPart formats and fills one partition.
func fillPart(b backend.Storage, opt CreateOptions, id ids, p Part) error {
	start := int64(p.First) * 512
	w, err := b.Writable()
	if err != nil {
		return err
	}
	build := Builds[opt.Version]
	if opt.Build != "" {
		build = opt.Build
	}
	fat := func(kind string) (filesystem.FileSystem, error) {
		return makeFAT(b, fatSpec{kind: kind, start: start, size: p.Size(), sectorSize: opt.SectorSize,
			label: p.Label, volumeID: id.u32("volid" + strconv.Itoa(p.Slot))})
	}
	switch p.Role {
	case RoleSystem:
		f, err := fat(p.FS)
		if err != nil {
			return err
		}
		note := []byte("ESXI-STUB placeholder for VMware esx-boot (" + build + "); not an EFI program\n")
		for _, name := range []string{"/EFI/BOOT/BOOTX64.EFI", "/EFI/VMware/mboot64.efi", "/EFI/VMware/safeboot64.efi"} {
			if err := writeFile(f, name, note); err != nil {
				return err
			}
		}
	case RoleBootBank, RoleAltBank:
		f, err := fat("fat16")
		if err != nil {
			return err
		}
		uuid, _ := hex.DecodeString(opt.BankUUID(p.Slot))
		magic := bankSector(uuid)
		if _, err := w.WriteAt(magic, start+int64(opt.SectorSize)); err != nil {
			return err
		}
		if opt.SectorSize != 512 {
			// Byte 512 too: it lies in the unused tail of the 4 KiB boot sector.
			if _, err := w.WriteAt(magic, start+512); err != nil {
				return err
			}
		}
		updated := opt.Updated(p.Slot)
		if updated == 0 {
			return nil
		}
		bankBuild := build
		if p.Slot == 6 {
			bankBuild = olderBuild(build)
		}
		cfg := BootCfg{
			BootState: 0,
			Title:     "Loading VMware ESXi",
			Kernel:    "b.b00",
			KernelOpt: "no-auto-partition",
			Modules:   BankModules,
			Build:     bankBuild,
			Updated:   updated,
		}
		if err := writeFile(f, "/boot.cfg", cfg.Bytes()); err != nil {
			return err
		}
		if err := writeFile(f, "/b.b00", stubkernel.Kernel()); err != nil {
			return err
		}
		for _, m := range append(append([]string(nil), BankModules...), "imgdb.tgz") {
			data := fmt.Appendf(nil, "ESXI-STUB module %s of build %s, bank %s\n", m, bankBuild, opt.BankUUID(p.Slot))
			data = append(data, id.bytes("module"+strconv.Itoa(p.Slot)+m, 2048)...)
			if err := writeFile(f, "/"+m, data); err != nil {
				return err
			}
		}
	case RoleStore:
		f, err := fat("fat16")
		if err != nil {
			return err
		}
		ver := string(opt.Version) + ".0"
		for _, name := range []string{
			"/packages/" + ver + "/vmtools/linux.iso",
			"/packages/" + ver + "/vmtools/windows.iso",
			"/packages/" + ver + "/floppies/pvscsi-Windows2008.flp",
			"/packages/var/db/locker/vibs/tools-light.xml",
		} {
			data := fmt.Appendf(nil, "ESXI-STUB store/locker file %s (build %s)\n", name, build)
			data = append(data, id.bytes("store"+name, 4096)...)
			if err := writeFile(f, name, data); err != nil {
				return err
			}
		}
	case RoleScratch:
		f, err := fat(p.FS)
		if err != nil {
			return err
		}
		// Few files: go-diskfs rewrites the whole (4 MiB) FAT32 table per allocation.
		for _, name := range []string{"/log/vmkernel.log", "/log/hostd.log"} {
			if err := writeFile(f, name, fmt.Appendf(nil, "ESXI-STUB scratch file %s (build %s)\n", name, build)); err != nil {
				return err
			}
		}
	case RoleCoreDump:
		if _, err := w.WriteAt(dataBlock(id, p, "vmkDiagnostic", 0, 0), start); err != nil {
			return err
		}
	case RoleDatastore, RoleOSData:
		kind, what := "VMFS", "VM data"
		if p.Role == RoleOSData {
			kind, what = "VMFS-L", "OS data"
		}
		hdr := make([]byte, DataBlockSize)
		disk := opt.DefaultDiskID()
		if opt.DiskID != nil {
			disk = *opt.DiskID
		}
		lvm := &LVMHeader{Version: 14, Disk: disk, UUID: hex.EncodeToString(id.bytes("lvm"+strconv.Itoa(p.Slot), 16))}
		label := "datastore1"
		if p.Role == RoleOSData {
			lvm.VMFSLFlag = 1
			label = "OSDATA-" + lvm.UUID
		}
		copy(hdr, lvm.marshal())
		copy(hdr[0x100:0x200], fmt.Sprintf("ESXI-STUB %s volume header, slot %d, volume %s, build %s\n", kind, p.Slot, id.guid("vmfs"+strconv.Itoa(p.Slot)), build))
		if _, err := w.WriteAt(hdr, start+LVMHeaderOffset); err != nil {
			return err
		}
		if p.Size() >= FSInfoOffset+2*DataBlockSize {
			fsi := make([]byte, 512)
			binary.LittleEndian.PutUint32(fsi, FSInfoMagic)
			copy(fsi[fsLabelOff:fsLabelOff+fsLabelLen], label)
			if _, err := w.WriteAt(fsi, start+FSInfoOffset); err != nil {
				return err
			}
		}
		for i, off := range DataBlockOffsets(p) {
			if _, err := w.WriteAt(dataBlock(id, p, what, i, off), start+off); err != nil {
				return err
			}
		}
	}
	return nil
}

// olderBuild returns a plausible earlier build number for the alternate bank.
func olderBuild(b string) string {
	v, n, ok := strings.Cut(b, "-")
	if !ok {
		return b
	}
	num, err := strconv.Atoi(n)
	if err != nil {
		return b
	}
	return fmt.Sprintf("%s-%d", v, num/2)
}

// DataBlockOffsets returns the byte offsets, relative to the partition
// start, of the recognisable data blocks Create writes on a datastore or
// OSDATA partition: at 2 MiB, 64 MiB, the middle and the last 4 KiB, so
// that a lost or moved piece anywhere shows.
func DataBlockOffsets(p Part) []int64 {
	size := p.Size()
	var offs []int64
	for _, o := range []int64{2 << 20, 64 << 20, size / 2 / DataBlockSize * DataBlockSize, size - DataBlockSize} {
		if o >= 2<<20 && o+DataBlockSize <= size && (len(offs) == 0 || o > offs[len(offs)-1]) {
			offs = append(offs, o)
		}
	}
	return offs
}

// dataBlock is one recognisable 4 KiB block: a text line naming what it is
// and where it belongs, then seeded filler.
func dataBlock(id ids, p Part, what string, i int, off int64) []byte {
	b := make([]byte, DataBlockSize)
	line := fmt.Sprintf("ESXI-STUB %s block %d of partition %d (%s) at partition byte %d\n", what, i, p.Slot, p.Role, off)
	n := copy(b, line)
	copy(b[n:], id.bytes(fmt.Sprintf("block%d/%d", p.Slot, i), DataBlockSize-n))
	return b
}
