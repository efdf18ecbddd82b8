package imaging

import (
	"bytes"
	"encoding/binary"
	"io"
)

// What a target holds besides a partition table: a filesystem, a volume
// manager or RAID member, swap or an ISO image written straight onto the
// disk. A restore onto such a target needs -yes, as for a table. The
// table is small and covers what a rescue system meets on servers; the
// tests cross-check it with blkid (util-linux).

// contentMagic is one signature: bytes at an offset from the start, or
// from the end (fromEnd) of the device.
type contentMagic struct {
	name  string
	off   int64 // from the start (or see at)
	magic []byte
	// at computes the offset from the device size instead (md 0.90/1.0).
	at func(size int64) int64
}

var contentMagics = []contentMagic{
	{name: "an ext2/3/4 filesystem", off: 1024 + 0x38, magic: []byte{0x53, 0xEF}},
	{name: "an XFS filesystem", off: 0, magic: []byte("XFSB")},
	{name: "a Btrfs filesystem", off: 65536 + 0x40, magic: []byte("_BHRfS_M")},
	{name: "an NTFS filesystem", off: 3, magic: []byte("NTFS    ")},
	{name: "an exFAT filesystem", off: 3, magic: []byte("EXFAT   ")},
	{name: "a FAT32 filesystem", off: 82, magic: []byte("FAT32   ")},
	{name: "a FAT12/16 filesystem", off: 54, magic: []byte("FAT1")},
	{name: "an LVM2 physical volume", off: 512 + 0x18, magic: []byte("LVM2 001")},
	{name: "an LVM2 physical volume", off: 0x18, magic: []byte("LVM2 001")},
	{name: "a LUKS encrypted volume", off: 0, magic: []byte("LUKS\xba\xbe")},
	{name: "a Linux RAID (md 1.1) member", off: 0, magic: mdMagic},
	{name: "a Linux RAID (md 1.2) member", off: 4096, magic: mdMagic},
	{name: "a Linux RAID (md 1.0) member", magic: mdMagic, at: func(size int64) int64 {
		return ((size/512 - 16) &^ 7) * 512
	}},
	{name: "a Linux RAID (md 0.90) member", magic: mdMagic, at: func(size int64) int64 {
		return size&^(64<<10-1) - 64<<10
	}},
	{name: "a VMFS volume", off: 1 << 20, magic: []byte{0x0D, 0xD0, 0x01, 0xC0}},
	{name: "Linux swap", off: 4096 - 10, magic: []byte("SWAPSPACE2")},
	{name: "Linux swap", off: 4096 - 10, magic: []byte("SWAP-SPACE")},
	{name: "Linux swap", off: 65536 - 10, magic: []byte("SWAPSPACE2")},
	{name: "an ISO 9660 image", off: 32769, magic: []byte("CD001")},
}

// mdMagic is the md superblock magic 0xa92b4efc, little-endian.
var mdMagic = binary.LittleEndian.AppendUint32(nil, 0xa92b4efc)

// describeContent names the filesystem or volume signature found on r (of
// size bytes), "" when none is known.
func describeContent(r io.ReaderAt, size int64) string {
	for _, m := range contentMagics {
		off := m.off
		if m.at != nil {
			off = m.at(size)
		}
		if off < 0 || off+int64(len(m.magic)) > size {
			continue
		}
		b := make([]byte, len(m.magic))
		if _, err := r.ReadAt(b, off); err != nil {
			continue
		}
		if bytes.Equal(b, m.magic) {
			return m.name
		}
	}
	return ""
}
