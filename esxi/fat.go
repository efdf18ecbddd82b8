package esxi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// fatSpec says which FAT to make on a partition.
type fatSpec struct {
	kind       string // "fat12", "fat16" or "fat32"; "fat16" falls back to fat12 when too small
	start      int64  // byte offset of the partition
	size       int64  // bytes
	sectorSize int    // logical sector size of the disk
	label      string
	volumeID   uint32
}

// fileTime is the timestamp every file and directory we create carries, so
// images are reproducible.
var fileTime = time.Date(2013, 10, 17, 12, 0, 0, 0, time.UTC)

// fat16Max is the largest FAT16 go-diskfs makes (64 sectors per cluster,
// fewer than 65525 clusters); larger partitions get a FAT16 of this size.
const fat16Max = 2047 << 20

// makeFAT formats a FAT filesystem with go-diskfs. go-diskfs makes FAT12/16
// only with 512-byte sectors; on 4Kn disks FAT12/16 is laid out here with
// 4096-byte sectors and handed to go-diskfs's FAT code to fill. The volume
// ID is patched in afterwards (go-diskfs's reproducible mode writes 0).
func makeFAT(b backend.Storage, s fatSpec) (filesystem.FileSystem, error) {
	kind := s.kind
	if s.sectorSize == 512 {
		switch kind {
		case "fat16":
			if s.size > fat16Max {
				s.size = fat16Max // the rest of a large bank stays unused
			}
			f, err := fat16.Create(b, s.size, s.start, 512, s.label, true)
			if err == nil {
				return f, patchVolumeID(b, s.start, "fat16", s.volumeID)
			}
			if s.size > 32<<20 {
				return nil, fmt.Errorf("fat16 at %d: %w", s.start, err)
			}
			// go-diskfs uses 2 sectors per cluster even on the 4 MB ESXi 5/6
			// system partition, too few clusters for FAT16; ESXi's has one
			// sector per cluster, which makeFATSectors does.
			return makeFATSectors(b, s, 512)
		case "fat12":
			f, err := fat12.Create(b, s.size, s.start, 512, s.label, true)
			if err != nil {
				return nil, fmt.Errorf("fat12 at %d: %w", s.start, err)
			}
			return f, patchVolumeID(b, s.start, kind, s.volumeID)
		}
	}
	if kind == "fat32" {
		f, err := fat32.Create(b, s.size, s.start, int64(s.sectorSize), s.label, true)
		if err != nil {
			return nil, fmt.Errorf("fat32 at %d: %w", s.start, err)
		}
		return f, patchVolumeID(b, s.start, "fat32", s.volumeID)
	}
	return makeFATSectors(b, s, 4096)
}

// patchVolumeID stores the volume serial number in the boot sector (and, on
// FAT32, in the backup boot sector at sector 6).
func patchVolumeID(b backend.Storage, start int64, kind string, id uint32) error {
	w, err := b.Writable()
	if err != nil {
		return err
	}
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], id)
	offs := []int64{0x27}
	if kind == "fat32" {
		bs := make([]byte, 512)
		if _, err := b.ReadAt(bs, start); err != nil {
			return err
		}
		sec := int64(binary.LittleEndian.Uint16(bs[11:13]))
		offs = []int64{0x43, 6*sec + 0x43}
	}
	for _, o := range offs {
		if _, err := w.WriteAt(v[:], start+o); err != nil {
			return fmt.Errorf("writing FAT volume ID: %w", err)
		}
	}
	return nil
}

// makeFATSectors lays out a FAT12/16 filesystem with bps-byte sectors
// (4096 on a 4Kn disk, where Linux cannot mount a FAT with smaller sectors)
// and the smallest cluster size that keeps FAT16 within its cluster limits,
// and lets go-diskfs's fat12 code manage it. FAT16 unless the partition is
// too small for it.
func makeFATSectors(b backend.Storage, s fatSpec, bps uint32) (filesystem.FileSystem, error) {
	const rootEntries = 512
	const reserved = 2 // sector 1 holds the ESXi boot bank UUID
	if max := int64(65524) * 64 * int64(bps); s.size > max {
		s.size = max
	}
	total := uint32(s.size / int64(bps))
	rootSectors := uint32(rootEntries * 32 / bps)
	if rootSectors == 0 {
		rootSectors = 1
	}
	bits := uint32(16)
	var spc, fatSectors, clusters uint32
	for spc = 1; spc <= 64; spc *= 2 {
		data := total - reserved - rootSectors
		clusters = data / spc
		fatSectors = ((clusters+2)*bits/8 + bps - 1) / bps
		clusters = (data - 2*fatSectors) / spc
		if clusters < 65525 {
			break
		}
	}
	if clusters < 4085 {
		bits = 12
		spc = 1
		clusters = (total - reserved - rootSectors) / spc
		fatSectors = ((clusters+2)*3/2 + bps - 1) / bps
		clusters = (total - reserved - rootSectors - 2*fatSectors) / spc
	}
	if clusters < 16 {
		return nil, fmt.Errorf("partition of %d bytes is too small for a FAT", s.size)
	}
	var ts16 uint16
	var ts32 uint32
	if total <= 0xFFFF {
		ts16 = uint16(total)
	} else {
		ts32 = total
	}
	fsType := "FAT16   "
	if bits == 12 {
		fsType = "FAT12   "
	}
	bpb := &fat12.Dos40EBPB{
		Dos331BPB: &fat12.Dos331BPB{
			Dos20BPB: &fat12.Dos20BPB{
				BytesPerSector:       fat12.SectorSize(bps),
				SectorsPerCluster:    uint8(spc),
				ReservedSectors:      reserved,
				FatCount:             2,
				RootDirectoryEntries: rootEntries,
				TotalSectors:         ts16,
				MediaType:            uint8(fat12.MediaFixedDisk),
				SectorsPerFat:        uint16(fatSectors),
			},
			SectorsPerTrack: 63,
			Heads:           255,
			TotalSectors32:  ts32,
		},
		DriveNumber:        0x80,
		ExtBootSignature:   0x29,
		VolumeSerialNumber: s.volumeID,
		VolumeLabel:        "NO NAME    ",
		FileSystemType:     fsType,
	}
	fatStart := uint32(reserved * bps)
	fatBytes := fatSectors * bps
	rootOff := fatStart + 2*fatBytes
	dataStart := rootOff + rootSectors*bps
	tbl := &fatTable{bits: bits, size: fatBytes, max: clusters + 1, fatID: 0xFFF8}
	if bits == 12 {
		tbl.fatID = 0xFF8
	}
	tbl.clusters = make([]uint32, tbl.max+1)
	// Reserve cluster 2 as fat16.Create does, so go-diskfs never hands it
	// out here; Create frees it once all files are written (fatCluster2).
	tbl.SetCluster(2, tbl.EOCMarker())
	f := fat12.NewFileSystem(b, bpb, tbl, dataStart, int(spc*bps), s.size, s.start,
		int64(rootOff), rootEntries, uint64(fatStart), uint64(fatStart+fatBytes))
	if err := f.WriteBootSector(); err != nil {
		return nil, err
	}
	if err := f.WriteFat(); err != nil {
		return nil, err
	}
	w, err := b.Writable()
	if err != nil {
		return nil, err
	}
	if _, err := w.WriteAt(make([]byte, rootEntries*32), s.start+int64(rootOff)); err != nil {
		return nil, err
	}
	if err := f.SetLabel(s.label); err != nil {
		return nil, err
	}
	if bits == 16 {
		return &fat16.FileSystem{FileSystem: f}, nil
	}
	return f, nil
}

// fatTable is a FAT12 or FAT16 allocation table for makeFATSectors.
type fatTable struct {
	bits     uint32
	fatID    uint32
	clusters []uint32
	max      uint32
	size     uint32
}

var _ fat12.FATTable = (*fatTable)(nil)

func (t *fatTable) ClusterValue(n uint32) uint32 { return t.clusters[n] }
func (t *fatTable) SetCluster(n, val uint32)     { t.clusters[n] = val }
func (t *fatTable) IsEOC(val uint32) bool        { return val >= t.EOCMarker()&^7 }
func (t *fatTable) EOCMarker() uint32            { return 1<<t.bits - 1 }
func (t *fatTable) UnusedMarker() uint32         { return 0 }
func (t *fatTable) MaxCluster() uint32           { return t.max }
func (t *fatTable) FATID() uint32                { return t.fatID }
func (t *fatTable) RootDirCluster() uint32       { return 2 }
func (t *fatTable) Size() uint32                 { return t.size }

func (t *fatTable) FromBytes(b []byte) {
	for i := uint32(0); i <= t.max; i++ {
		t.clusters[i] = t.get(b, i)
	}
}

func (t *fatTable) get(b []byte, i uint32) uint32 {
	if t.bits == 16 {
		return uint32(binary.LittleEndian.Uint16(b[2*i:]))
	}
	v := uint32(binary.LittleEndian.Uint16(b[i*3/2:]))
	if i%2 == 1 {
		return v >> 4
	}
	return v & 0xFFF
}

func (t *fatTable) Bytes() []byte {
	b := make([]byte, t.size+2) // room for the 16-bit window of the last FAT12 entry
	vals := append([]uint32(nil), t.clusters...)
	vals[0], vals[1] = t.fatID, t.EOCMarker()
	for i, v := range vals {
		if t.bits == 16 {
			binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
			continue
		}
		o := i * 3 / 2
		cur := binary.LittleEndian.Uint16(b[o:])
		if i%2 == 1 {
			cur = cur&0x000F | uint16(v&0xFFF)<<4
		} else {
			cur = cur&0xF000 | uint16(v&0xFFF)
		}
		binary.LittleEndian.PutUint16(b[o:], cur)
	}
	return b[:t.size]
}

// readFAT opens the FAT filesystem of the partition at [start, start+size)
// of b with go-diskfs (any FAT type, any sector size).
func readFAT(b backend.Storage, start, size int64) (filesystem.FileSystem, error) {
	if err := fatSane(b, start, size); err != nil {
		return nil, err
	}
	if f, err := fat32.Read(b, size, start, 0); err == nil {
		return f, nil
	}
	if f, err := fat16.Read(b, size, start, 0); err == nil {
		return f, nil
	}
	f, err := fat12.Read(b, size, start, 0)
	if err != nil {
		// fat12.Read insists on 512-byte sectors: try our 4Kn FAT12 reader.
		if f4, err4 := readFAT12x4K(b, start, size); err4 == nil {
			return f4, nil
		}
		return nil, fmt.Errorf("no FAT filesystem at byte %d: %w", start, err)
	}
	return f, nil
}

// fatSane checks a boot sector before go-diskfs reads it, which allocates
// the whole FAT as the BPB says: sector size 512-4096, a FAT of at most
// 16 MiB, and a filesystem that fits in the partition.
func fatSane(b io.ReaderAt, start, size int64) error {
	bs := make([]byte, 512)
	if _, err := b.ReadAt(bs, start); err != nil {
		return fmt.Errorf("reading boot sector: %w", err)
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:]))
	spf := int64(binary.LittleEndian.Uint16(bs[22:]))
	if spf == 0 {
		spf = int64(binary.LittleEndian.Uint32(bs[36:]))
	}
	total := int64(binary.LittleEndian.Uint16(bs[19:]))
	if total == 0 {
		total = int64(binary.LittleEndian.Uint32(bs[32:]))
	}
	switch {
	case bs[510] != 0x55 || bs[511] != 0xAA:
		return errors.New("no boot sector signature")
	case bps < 512 || bps > 4096 || bps&(bps-1) != 0:
		return fmt.Errorf("bytes per sector %d", bps)
	case bs[13] == 0 || bs[16] == 0 || bs[16] > 2:
		return errors.New("bad cluster size or FAT count")
	case spf == 0 || spf*bps > 16<<20:
		return fmt.Errorf("FAT of %d sectors", spf)
	case total == 0 || total*bps > size:
		return fmt.Errorf("filesystem of %d sectors does not fit in %d bytes", total, size)
	}
	return nil
}

// readFAT12x4K opens a FAT12 with sectors larger than 512 bytes, which
// fat12.Read refuses.
func readFAT12x4K(b backend.Storage, start, size int64) (filesystem.FileSystem, error) {
	raw := make([]byte, 512)
	if _, err := b.ReadAt(raw, start); err != nil {
		return nil, err
	}
	bpb, err := fat12.Dos40EBPBFromBytesOnly(raw[11:])
	if err != nil {
		return nil, err
	}
	d := bpb.Dos331BPB.Dos20BPB
	bps := uint32(d.BytesPerSector)
	if bps <= 512 || d.RootDirectoryEntries == 0 || d.SectorsPerCluster == 0 {
		return nil, errors.New("not a FAT12 with large sectors")
	}
	rootSectors := (uint32(d.RootDirectoryEntries)*32 + bps - 1) / bps
	fatStart := uint32(d.ReservedSectors) * bps
	fatBytes := uint32(d.SectorsPerFat) * bps
	rootOff := fatStart + uint32(d.FatCount)*fatBytes
	dataStart := rootOff + rootSectors*bps
	clusters := (bpb.TotalSectors() - uint32(d.ReservedSectors) - uint32(d.FatCount)*uint32(d.SectorsPerFat) - rootSectors) / uint32(d.SectorsPerCluster)
	if clusters >= 4085 {
		return nil, errors.New("not FAT12")
	}
	tbl := &fatTable{bits: 12, size: fatBytes, max: clusters + 1}
	tbl.clusters = make([]uint32, tbl.max+1)
	fb := make([]byte, fatBytes+2)
	if _, err := b.ReadAt(fb[:fatBytes], start+int64(fatStart)); err != nil {
		return nil, err
	}
	tbl.FromBytes(fb)
	tbl.fatID = tbl.clusters[0]
	return fat12.NewFileSystem(b, bpb, tbl, dataStart, int(d.SectorsPerCluster)*int(bps), size, start,
		int64(rootOff), int(d.RootDirectoryEntries), uint64(fatStart), uint64(fatStart+fatBytes)), nil
}

// writeFile creates name (and its parent directories) on a FAT with data.
func writeFile(f filesystem.FileSystem, name string, data []byte) error {
	for i := 1; i < len(name); i++ {
		if name[i] == '/' {
			if err := f.Mkdir(name[:i]); err != nil {
				return fmt.Errorf("mkdir %s: %w", name[:i], err)
			}
		}
	}
	fh, err := f.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := fh.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	return nil
}

// readerStorage adapts an io.ReaderAt to go-diskfs's read-only backend.
type readerStorage struct {
	r    io.ReaderAt
	size int64
	pos  int64
}

var _ backend.Storage = (*readerStorage)(nil)

func (s *readerStorage) Stat() (fs.FileInfo, error) { return nil, errors.ErrUnsupported }
func (s *readerStorage) Read(p []byte) (int, error) {
	n, err := s.r.ReadAt(p, s.pos)
	s.pos += int64(n)
	return n, err
}
func (s *readerStorage) ReadAt(p []byte, off int64) (int, error) { return s.r.ReadAt(p, off) }
func (s *readerStorage) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		s.pos = off
	case io.SeekCurrent:
		s.pos += off
	case io.SeekEnd:
		s.pos = s.size + off
	}
	return s.pos, nil
}
func (s *readerStorage) Close() error           { return nil }
func (s *readerStorage) Sys() (*os.File, error) { return nil, backend.ErrNotSuitable }
func (s *readerStorage) Writable() (backend.WritableFile, error) {
	return nil, backend.ErrIncorrectOpenMode
}
func (s *readerStorage) Path() string { return "" }

// fatCluster2 reads or changes FAT entry 2 in every FAT copy of a FAT12/16
// filesystem at start. go-diskfs's fat16.Create (and makeFATSectors) marks
// cluster 2 as in use (end of chain) although a FAT12/16 root directory has
// its own region, so no file gets it and fsck.fat reports a lost cluster:
// Create frees it once every file is written. (Later writers, like Damage's
// go-diskfs calls, may then use cluster 2 for a file; that is fine.) set < 0
// only reads; it reports the old value and whether the filesystem is
// FAT12/16 at all.
func fatCluster2(f interface {
	io.ReaderAt
	io.WriterAt
}, start int64, set int) (old uint32, fat1216 bool, err error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return 0, false, err
	}
	bpb, err := fat12.Dos40EBPBFromBytesOnly(bs[11:])
	if err != nil {
		return 0, false, nil
	}
	d := bpb.Dos331BPB.Dos20BPB
	if d.RootDirectoryEntries == 0 || d.SectorsPerCluster == 0 || d.FatCount == 0 {
		return 0, false, nil // FAT32: cluster 2 is normally the root directory
	}
	bps := int64(d.BytesPerSector)
	rootSectors := (int64(d.RootDirectoryEntries)*32 + bps - 1) / bps
	dataSectors := int64(bpb.TotalSectors()) - int64(d.ReservedSectors) - int64(d.FatCount)*int64(d.SectorsPerFat) - rootSectors
	twelve := dataSectors/int64(d.SectorsPerCluster) < 4085
	for i := int64(0); i < int64(d.FatCount); i++ {
		off := start + (int64(d.ReservedSectors)+i*int64(d.SectorsPerFat))*bps
		var b [2]byte
		at := off + 4 // FAT16: entry 2 is bytes 4-5
		if twelve {
			at = off + 3 // FAT12: entry 2 is byte 3 and the low nibble of byte 4
		}
		if _, err := f.ReadAt(b[:], at); err != nil {
			return 0, true, err
		}
		v := binary.LittleEndian.Uint16(b[:])
		cur := uint32(v)
		if twelve {
			cur = uint32(v & 0x0FFF)
		}
		if i == 0 {
			old = cur
		}
		if set < 0 {
			continue
		}
		if twelve {
			v = v&0xF000 | uint16(set)&0x0FFF
		} else {
			v = uint16(set)
		}
		binary.LittleEndian.PutUint16(b[:], v)
		if _, err := f.WriteAt(b[:], at); err != nil {
			return old, true, err
		}
	}
	return old, true, nil
}

// fixFAT32 corrects two things go-diskfs v1.9.4 gets wrong on FAT32, both
// reported by fsck.fat: the ".." entry of a directory in the root must
// point to cluster 0 (it writes the root's cluster number), and the FSInfo
// sector's free-cluster count and next-free hint must be filled in.
func fixFAT32(f interface {
	io.ReaderAt
	io.WriterAt
}, start int64) error {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return err
	}
	le16 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) }
	le32 := func(b []byte) int64 { return int64(binary.LittleEndian.Uint32(b)) }
	bps, spc, reserved, nfat := le16(bs[11:]), int64(bs[13]), le16(bs[14:]), int64(bs[16])
	if le16(bs[17:]) != 0 || bps == 0 || spc == 0 {
		return nil // not FAT32
	}
	total, fatSectors, rootCluster, fsinfo, backup := le32(bs[32:]), le32(bs[36:]), le32(bs[44:]), le16(bs[48:]), le16(bs[50:])
	dataStart := reserved + nfat*fatSectors
	clusters := (total - dataStart) / spc
	clusterOff := func(c int64) int64 { return start + (dataStart+(c-2)*spc)*bps }

	fat := make([]byte, fatSectors*bps)
	if _, err := f.ReadAt(fat, start+reserved*bps); err != nil {
		return err
	}
	var free, next int64 = 0, -1
	for c := int64(2); c < clusters+2 && 4*c+4 <= int64(len(fat)); c++ {
		if binary.LittleEndian.Uint32(fat[4*c:])&0x0FFFFFFF == 0 {
			free++
			if next < 0 {
				next = c
			}
		}
	}
	var fi [8]byte
	binary.LittleEndian.PutUint32(fi[:4], uint32(free))
	binary.LittleEndian.PutUint32(fi[4:], uint32(next))
	for _, sec := range []int64{fsinfo, backup + fsinfo} {
		if sec == 0 || (sec == backup+fsinfo && backup == 0) {
			continue
		}
		sig := make([]byte, 4)
		if _, err := f.ReadAt(sig, start+sec*bps); err != nil {
			return err
		}
		if string(sig) != "RRaA" {
			continue
		}
		if _, err := f.WriteAt(fi[:], start+sec*bps+488); err != nil {
			return err
		}
	}

	root := make([]byte, spc*bps)
	if _, err := f.ReadAt(root, clusterOff(rootCluster)); err != nil {
		return err
	}
	for i := 0; i+32 <= len(root); i += 32 {
		e := root[i : i+32]
		if e[0] == 0 {
			break
		}
		if e[0] == 0xE5 || e[11] == 0x0F || e[11]&0x10 == 0 || e[0] == '.' {
			continue
		}
		sub := int64(binary.LittleEndian.Uint16(e[20:]))<<16 | int64(binary.LittleEndian.Uint16(e[26:]))
		if sub < 2 {
			continue
		}
		dot := make([]byte, 64)
		if _, err := f.ReadAt(dot, clusterOff(sub)); err != nil {
			return err
		}
		dd := dot[32:64]
		if string(dd[:11]) != "..         " {
			continue
		}
		binary.LittleEndian.PutUint16(dd[20:], 0)
		binary.LittleEndian.PutUint16(dd[26:], 0)
		if _, err := f.WriteAt(dd, clusterOff(sub)+32); err != nil {
			return err
		}
	}
	return nil
}
