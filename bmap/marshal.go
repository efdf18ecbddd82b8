package bmap

import (
	"bytes"
	"encoding/hex"
	"fmt"
)

const marshalHeader = `<?xml version="1.0" ?>
<!-- This file contains the block map for an image file: the list of blocks
     that hold data. Only these blocks have to be copied to the target; the
     other blocks are zeros. Written by imgcopy in bmaptool's format 2.0
     (bmap-tools), plus one extension element, ImageSHA256. -->

<bmap version="2.0">
`

// Marshal returns the map as version 2.0 XML that bmaptool accepts, laid out
// like bmaptool's own files: same element order, one Range per line
// ("A-B", or "A" for a single block), MappedBlocksCount, and a valid
// BmapFileChecksum. The bmap file checksum uses ChecksumType's hash, as
// bmaptool requires (sha256 for maps from a Builder); a map with ChecksumType
// "" is written with ChecksumType sha256 and ranges without checksums. The
// ImageSHA256 extension element, when present, follows ChecksumType.
//
// Marshal expects a valid map (as from Parse or Builder); Parse of the result
// returns the same map except that Version is "2.0" and an empty
// ChecksumType becomes "sha256".
func (m *Map) Marshal() []byte {
	typ, rangeSums := m.ChecksumType, true
	if hashSize(typ) == 0 { // "" (or invalid): no range checksums
		typ, rangeSums = "sha256", false
	}
	var b bytes.Buffer
	b.WriteString(marshalHeader)
	fmt.Fprintf(&b, "    <!-- Image size in bytes: %s -->\n", humanSize(m.ImageSize))
	fmt.Fprintf(&b, "    <ImageSize> %d </ImageSize>\n\n", m.ImageSize)
	b.WriteString("    <!-- Size of a block in bytes -->\n")
	fmt.Fprintf(&b, "    <BlockSize> %d </BlockSize>\n\n", m.BlockSize)
	b.WriteString("    <!-- Count of blocks in the image file -->\n")
	fmt.Fprintf(&b, "    <BlocksCount> %d </BlocksCount>\n\n", m.BlocksCount)
	mapped := m.MappedBlocks()
	percent := 0.0
	if m.BlocksCount > 0 {
		percent = float64(mapped) * 100 / float64(m.BlocksCount)
	}
	fmt.Fprintf(&b, "    <!-- Count of mapped blocks: %s or %.1f%% -->\n", humanSize(mapped*m.BlockSize), percent)
	fmt.Fprintf(&b, "    <MappedBlocksCount> %d </MappedBlocksCount>\n\n", mapped)
	b.WriteString("    <!-- Type of checksum used in this file -->\n")
	fmt.Fprintf(&b, "    <ChecksumType> %s </ChecksumType>\n\n", typ)
	if m.ImageSHA256 != nil {
		b.WriteString("    <!-- SHA-256 of the whole image (imgcopy's extension; bmaptool ignores it) -->\n")
		fmt.Fprintf(&b, "    <ImageSHA256> %x </ImageSHA256>\n\n", m.ImageSHA256)
	}
	b.WriteString("    <!-- The checksum of this bmap file. When it is calculated, the value of\n")
	b.WriteString("         the checksum has be zero (all ASCII \"0\" symbols).  -->\n")
	b.WriteString("    <BmapFileChecksum> ")
	sumPos := b.Len()
	sumLen := 2 * hashSize(typ)
	b.Write(bytes.Repeat([]byte("0"), sumLen))
	b.WriteString(" </BmapFileChecksum>\n\n")
	b.WriteString("    <!-- The block map which consists of elements which may either be a\n")
	b.WriteString("         range of blocks or a single block. The 'chksum' attribute\n")
	b.WriteString("         (if present) is the checksum of this blocks range. -->\n")
	b.WriteString("    <BlockMap>\n")
	for _, r := range m.Ranges {
		b.WriteString("        <Range")
		if rangeSums && r.Checksum != nil {
			fmt.Fprintf(&b, ` chksum="%x"`, r.Checksum)
		}
		if r.First == r.Last {
			fmt.Fprintf(&b, "> %d </Range>\n", r.First)
		} else {
			fmt.Fprintf(&b, "> %d-%d </Range>\n", r.First, r.Last)
		}
	}
	b.WriteString("    </BlockMap>\n</bmap>\n")

	out := b.Bytes()
	h := newHash(typ)
	h.Write(out)
	hex.Encode(out[sumPos:sumPos+sumLen], h.Sum(nil))
	return out
}

// humanSize formats bytes like bmaptool's human_size ("28.0 KiB").
func humanSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	size := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		size /= 1024
		if size < 1024 {
			return fmt.Sprintf("%.1f %s", size, unit)
		}
	}
	return fmt.Sprintf("%.1f EiB", size)
}
