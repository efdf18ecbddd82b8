// Package usbimg builds the rescue USB stick image: a GPT disk with one EFI
// system partition (FAT32) holding the files given, and optionally GRUB's
// legacy-BIOS boot code (boot.img in the MBR, core.img in a BIOS boot
// partition), patched the way grub-bios-setup(8) does it.
package usbimg

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

const (
	sector = 512
	// biosBootStart and biosBootSectors place the BIOS boot partition at 1 MiB, 1 MiB long.
	biosBootStart   = 2048
	biosBootSectors = 2048
	// espStart is where the EFI system partition begins (2 MiB).
	espStart = 4096
	// gptReserve is what the backup GPT needs at the end of the disk (array + header).
	gptReserve = 33
)

// Offsets in GRUB's i386-pc boot.img and diskboot.img (grub/include/grub/i386/pc/boot.h).
const (
	grubKernelSector = 0x5c  // GRUB_BOOT_MACHINE_KERNEL_SECTOR: LBA of core.img's first sector
	grubDriveCheck   = 0x66  // GRUB_BOOT_MACHINE_DRIVE_CHECK: jmp replaced by two NOPs for hard disks
	grubMBRCodeSize  = 0x1b8 // boot code ends where the disk signature begins
	grubBlocklist    = sector - 12
	grubCoreSegment  = 0x820 // GRUB_BOOT_I386_PC_KERNEL_SEG + 0x20
)

// File is one file to put on the EFI system partition.
type File struct {
	// Dst is the absolute path on the FAT file system, e.g. /EFI/BOOT/BOOTX64.EFI.
	Dst string
	// Src is the file on the build machine to copy.
	Src string
}

// Options describe the image.
type Options struct {
	// Size of the image in bytes; rounded up to whole MiB.
	Size int64
	// Label is the FAT volume label of the ESP (at most 11 characters).
	Label string
	// Files go onto the ESP; their directories are created.
	Files []File
	// GrubBootImg and GrubCoreImg, when both set, make the image boot on
	// legacy BIOS: GRUB's boot.img and a core.img built with
	// grub-mkimage -O i386-pc. Both nil: UEFI only.
	GrubBootImg, GrubCoreImg []byte
}

// guid derives a stable GUID from the label and a role, so that the same
// inputs give the same image bytes.
func guid(label, role string) string {
	s := sha256.Sum256([]byte("esxi-rescue usb " + label + " " + role))
	s[6] = s[6]&0x0f | 0x40 // version 4 layout
	s[8] = s[8]&0x3f | 0x80 // RFC 4122 variant
	return strings.ToUpper(fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16]))
}

// Build writes the image to file (replacing it).
func Build(file string, opt Options) error {
	if len(opt.Label) == 0 || len(opt.Label) > 11 {
		return fmt.Errorf("usb image: volume label %q must be 1 to 11 characters", opt.Label)
	}
	bios := opt.GrubBootImg != nil || opt.GrubCoreImg != nil
	if bios {
		if len(opt.GrubBootImg) != sector {
			return fmt.Errorf("usb image: GRUB boot.img is %d bytes, want %d", len(opt.GrubBootImg), sector)
		}
		if len(opt.GrubCoreImg) < sector || len(opt.GrubCoreImg) > biosBootSectors*sector {
			return fmt.Errorf("usb image: GRUB core.img is %d bytes, want 512 to %d", len(opt.GrubCoreImg), biosBootSectors*sector)
		}
	}
	size := (opt.Size + 1<<20 - 1) &^ (1<<20 - 1)
	var need int64 = espStart*sector + gptReserve*sector
	for _, f := range opt.Files {
		st, err := os.Stat(f.Src)
		if err != nil {
			return fmt.Errorf("usb image: %w", err)
		}
		need += st.Size() + 64<<10
	}
	if size < need+34<<20 {
		return fmt.Errorf("usb image: %d MiB is too small for %d MiB of files plus a FAT32 file system", size>>20, need>>20)
	}
	if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("usb image: %w", err)
	}
	d, err := diskfs.Create(file, size, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("usb image: creating %s: %w", file, err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()

	// The ESP ends on a MiB boundary before the backup GPT.
	espEnd := uint64(size/sector-gptReserve-1)&^2047 - 1
	parts := []*gpt.Partition{{
		Index: 1, Start: espStart, End: espEnd, Type: gpt.EFISystemPartition,
		Name: "EFI system partition", GUID: guid(opt.Label, "esp"),
	}}
	if bios {
		parts = append(parts, &gpt.Partition{
			Index: 2, Start: biosBootStart, End: biosBootStart + biosBootSectors - 1, Type: gpt.BIOSBoot,
			Name: "BIOS boot partition", GUID: guid(opt.Label, "bios"),
		})
	}
	table := &gpt.Table{
		Partitions: parts, LogicalSectorSize: sector, PhysicalSectorSize: sector,
		ProtectiveMBR: true, GUID: guid(opt.Label, "disk"),
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("usb image: writing GPT: %w", err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{
		Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: opt.Label, Reproducible: true,
	})
	if err != nil {
		return fmt.Errorf("usb image: creating FAT32: %w", err)
	}
	files := append([]File(nil), opt.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Dst < files[j].Dst })
	made := map[string]bool{"/": true}
	for _, f := range files {
		if dir := path.Dir(f.Dst); !made[dir] {
			if err := fs.Mkdir(dir); err != nil {
				return fmt.Errorf("usb image: mkdir %s: %w", dir, err)
			}
			for p := dir; p != "/"; p = path.Dir(p) {
				made[p] = true
			}
		}
		if err := copyIn(fs, f); err != nil {
			return err
		}
	}
	closed = true
	if err := d.Close(); err != nil {
		return fmt.Errorf("usb image: closing: %w", err)
	}
	if err := finishFAT32(file, espStart*sector); err != nil {
		return err
	}
	if bios {
		if err := installGrubBIOS(file, opt.GrubBootImg, opt.GrubCoreImg); err != nil {
			return err
		}
	}
	return nil
}

func copyIn(fs filesystem.FileSystem, f File) error {
	in, err := os.Open(f.Src)
	if err != nil {
		return fmt.Errorf("usb image: %w", err)
	}
	defer in.Close()
	out, err := fs.OpenFile(f.Dst, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("usb image: creating %s: %w", f.Dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("usb image: writing %s: %w", f.Dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("usb image: closing %s: %w", f.Dst, err)
	}
	return nil
}

// installGrubBIOS does what grub-bios-setup does for a GPT disk with a BIOS
// boot partition: core.img goes into that partition, its first sector
// (diskboot.img) gets a block list pointing at the rest, and boot.img's code
// goes into the MBR (keeping the protective partition table) pointing at
// core.img's first sector.
func installGrubBIOS(file string, bootImg, coreImg []byte) error {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("usb image: %w", err)
	}
	defer f.Close()
	n := (len(coreImg) + sector - 1) / sector
	core := make([]byte, n*sector)
	copy(core, coreImg)
	bl := core[grubBlocklist:sector]
	binary.LittleEndian.PutUint64(bl[0:8], biosBootStart+1)
	binary.LittleEndian.PutUint16(bl[8:10], uint16(n-1))
	binary.LittleEndian.PutUint16(bl[10:12], grubCoreSegment)
	if _, err := f.WriteAt(core, biosBootStart*sector); err != nil {
		return fmt.Errorf("usb image: writing GRUB core.img: %w", err)
	}
	mbr := make([]byte, sector)
	if _, err := f.ReadAt(mbr, 0); err != nil {
		return fmt.Errorf("usb image: reading MBR: %w", err)
	}
	copy(mbr[:grubMBRCodeSize], bootImg[:grubMBRCodeSize])
	binary.LittleEndian.PutUint64(mbr[grubKernelSector:], biosBootStart)
	mbr[grubDriveCheck], mbr[grubDriveCheck+1] = 0x90, 0x90
	if _, err := f.WriteAt(mbr, 0); err != nil {
		return fmt.Errorf("usb image: writing MBR: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("usb image: %w", err)
	}
	return f.Close()
}

// finishFAT32 corrects what go-diskfs v1.9.4 leaves in a new FAT32 file
// system that fsck.fat reports: ".." entries of directories in the root
// point at the root's cluster instead of 0 (as the FAT specification
// requires), the FSInfo free-cluster count is left "unknown", the
// hidden-sectors field is 0 instead of the partition's first LBA, and the
// volume ID is 0 (we derive one from the label and SOURCE_DATE_EPOCH).
func finishFAT32(file string, start int64) error {
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("usb image: %w", err)
	}
	defer f.Close()
	bs := make([]byte, sector)
	if _, err := f.ReadAt(bs, start); err != nil {
		return fmt.Errorf("usb image: reading FAT32 boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:13]))
	spc := int64(bs[13])
	reserved := int64(binary.LittleEndian.Uint16(bs[14:16]))
	nfats := int64(bs[16])
	total := int64(binary.LittleEndian.Uint32(bs[32:36]))
	fatSectors := int64(binary.LittleEndian.Uint32(bs[36:40]))
	rootCluster := binary.LittleEndian.Uint32(bs[44:48])
	fsinfo := int64(binary.LittleEndian.Uint16(bs[48:50]))
	if bps != sector || spc == 0 || nfats == 0 || string(bs[82:87]) != "FAT32" {
		return fmt.Errorf("usb image: unexpected FAT32 boot sector (bytes/sector %d, sectors/cluster %d)", bps, spc)
	}
	// Hidden sectors: the partition's first LBA; volume ID: stable but not
	// zero (go-diskfs writes 0 in reproducible mode). In the boot sector and its backup.
	hidden := make([]byte, 4)
	binary.LittleEndian.PutUint32(hidden, uint32(start/sector))
	volid := sha256.Sum256([]byte("esxi-rescue usb volume " + string(bs[71:82]) + " " + os.Getenv("SOURCE_DATE_EPOCH")))
	for _, sec := range []int64{0, int64(binary.LittleEndian.Uint16(bs[50:52]))} {
		if _, err := f.WriteAt(hidden, start+sec*bps+28); err != nil {
			return fmt.Errorf("usb image: writing FAT32 boot sector: %w", err)
		}
		if _, err := f.WriteAt(volid[:4], start+sec*bps+67); err != nil {
			return fmt.Errorf("usb image: writing FAT32 boot sector: %w", err)
		}
	}
	fat := make([]byte, fatSectors*bps)
	if _, err := f.ReadAt(fat, start+reserved*bps); err != nil {
		return fmt.Errorf("usb image: reading FAT: %w", err)
	}
	dataStart := start + (reserved+nfats*fatSectors)*bps
	clusterBytes := spc * bps
	clusterOff := func(c uint32) int64 { return dataStart + int64(c-2)*clusterBytes }
	next := func(c uint32) uint32 { return binary.LittleEndian.Uint32(fat[4*c:]) & 0x0fffffff }

	// Walk the root directory's cluster chain; fix ".." in each subdirectory.
	buf := make([]byte, clusterBytes)
	for c, n := rootCluster, 0; c >= 2 && c < 0x0ffffff8; c, n = next(c), n+1 {
		if n > 1<<16 {
			return fmt.Errorf("usb image: root directory cluster chain loops")
		}
		if _, err := f.ReadAt(buf, clusterOff(c)); err != nil {
			return fmt.Errorf("usb image: reading root directory: %w", err)
		}
		for e := 0; e+32 <= len(buf); e += 32 {
			ent := buf[e : e+32]
			if ent[0] == 0 {
				break
			}
			if ent[0] == 0xe5 || ent[11] == 0x0f || ent[11]&0x10 == 0 || ent[0] == '.' {
				continue
			}
			sub := uint32(binary.LittleEndian.Uint16(ent[20:22]))<<16 | uint32(binary.LittleEndian.Uint16(ent[26:28]))
			dot := make([]byte, 64)
			if _, err := f.ReadAt(dot, clusterOff(sub)); err != nil {
				return fmt.Errorf("usb image: reading directory: %w", err)
			}
			dd := dot[32:64]
			if string(dd[0:11]) != "..         " {
				return fmt.Errorf("usb image: directory at cluster %d has no \"..\" entry", sub)
			}
			binary.LittleEndian.PutUint16(dd[20:22], 0)
			binary.LittleEndian.PutUint16(dd[26:28], 0)
			if _, err := f.WriteAt(dd, clusterOff(sub)+32); err != nil {
				return fmt.Errorf("usb image: writing directory: %w", err)
			}
		}
	}

	// Count free clusters and record the count in FSInfo and its backup.
	clusters := uint32((total - reserved - nfats*fatSectors) / spc)
	var free, lastUsed uint32
	for c := uint32(2); c < clusters+2; c++ {
		if next(c) == 0 {
			free++
		} else {
			lastUsed = c
		}
	}
	for _, sec := range []int64{fsinfo, fsinfo + 6} {
		fi := make([]byte, sector)
		if _, err := f.ReadAt(fi, start+sec*bps); err != nil {
			return fmt.Errorf("usb image: reading FSInfo: %w", err)
		}
		if binary.LittleEndian.Uint32(fi[0:4]) != 0x41615252 || binary.LittleEndian.Uint32(fi[484:488]) != 0x61417272 {
			return fmt.Errorf("usb image: no FSInfo signature in sector %d", sec)
		}
		binary.LittleEndian.PutUint32(fi[488:492], free)
		binary.LittleEndian.PutUint32(fi[492:496], lastUsed)
		if _, err := f.WriteAt(fi, start+sec*bps); err != nil {
			return fmt.Errorf("usb image: writing FSInfo: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("usb image: %w", err)
	}
	return f.Close()
}
