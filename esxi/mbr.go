package esxi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MBRPart is one partition of an MBR (msdos) table. Num follows Linux:
// 1-4 the primary slots, 5 on the logical partitions in chain order.
type MBRPart struct {
	Num   int    `json:"num"`
	Type  byte   `json:"type"`
	First uint64 `json:"first_lba"` // 512-byte sectors
	Last  uint64 `json:"last_lba"`
}

// MBRReport is an MBR table and whether it is an ESXi layout.
type MBRReport struct {
	Parts []MBRPart `json:"parts"`
	ESXi  bool      `json:"esxi"` // the layout of an install upgraded from ESX(i) 4.x
	Text  string    `json:"text"`
}

// maxLogical bounds the extended partition chain (a loop or a huge chain
// in a damaged table).
const maxLogical = 128

// ErrNoMBR: sector 0 has no MBR signature, or only a protective GPT entry.
var ErrNoMBR = errors.New("no MBR partition table")

// ParseMBR reads the MBR partition table at sector 0 of r (512-byte
// sectors) and the logical partitions of its extended partition. A GPT's
// protective MBR (type 0xEE) is not an MBR table: ErrNoMBR.
func ParseMBR(r io.ReaderAt, size int64) ([]MBRPart, error) {
	sec := make([]byte, 512)
	if _, err := r.ReadAt(sec, 0); err != nil {
		return nil, fmt.Errorf("esxi: reading sector 0: %w", err)
	}
	prim, err := mbrEntries(sec)
	if err != nil {
		return nil, err
	}
	var out []MBRPart
	var ext *MBRPart
	for i, e := range prim {
		if e.Type == 0 {
			continue
		}
		if e.Type == 0xEE {
			return nil, ErrNoMBR
		}
		e.Num = i + 1
		out = append(out, e)
		if (e.Type == 0x05 || e.Type == 0x0F || e.Type == 0x85) && ext == nil {
			x := e
			ext = &x
		}
	}
	if len(out) == 0 {
		return nil, ErrNoMBR
	}
	if ext == nil {
		return out, nil
	}
	// Logical partitions: each EBR's first entry is relative to the EBR,
	// its second (the next EBR) relative to the extended partition.
	next, num := ext.First, 5
	seen := map[uint64]bool{}
	for i := 0; i < maxLogical && next != 0; i++ {
		if seen[next] || next < ext.First || next > ext.Last || int64(next+1)*512 > size {
			return out, fmt.Errorf("esxi: MBR extended partition chain broken at sector %d", next)
		}
		seen[next] = true
		if _, err := r.ReadAt(sec, int64(next)*512); err != nil {
			return out, fmt.Errorf("esxi: reading EBR at sector %d: %w", next, err)
		}
		es, err := mbrEntries(sec)
		if err != nil {
			return out, fmt.Errorf("esxi: EBR at sector %d: %w", next, err)
		}
		if es[0].Type != 0 {
			p := es[0]
			p.Num, p.First, p.Last = num, p.First+next, p.Last+next
			out = append(out, p)
			num++
		}
		if es[1].Type == 0 {
			break
		}
		next = ext.First + es[1].First
	}
	return out, nil
}

// mbrEntries decodes the four entries of an MBR/EBR sector; First/Last are
// relative LBAs as stored.
func mbrEntries(sec []byte) ([4]MBRPart, error) {
	var es [4]MBRPart
	if len(sec) < 512 || sec[510] != 0x55 || sec[511] != 0xAA {
		return es, ErrNoMBR
	}
	for i := range es {
		b := sec[446+16*i : 446+16*(i+1)]
		start, n := binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])
		es[i].Type = b[4]
		if b[4] != 0 && n > 0 {
			es[i].First, es[i].Last = uint64(start), uint64(start)+uint64(n)-1
		}
	}
	return es, nil
}

// ExplainMBR says whether parts is the MBR layout ESXi hosts upgraded from
// ESX(i) 4.x keep (../shared/BRIEF.md): 4 = 32-8191 (type 4, the boot
// loader), an extended partition 1 from 8192 to 1843199 holding logical
// 5, 6 (boot banks), 7 (vmkcore), 8 (store), then scratch 2 and a VMFS
// datastore 3 (type 0xFB). The types of 5-8 and 2 are not checked (not
// confirmed). It always explains that only GPT tables are repaired here.
func ExplainMBR(parts []MBRPart) *MBRReport {
	rep := &MBRReport{Parts: parts}
	by := map[int]MBRPart{}
	for _, p := range parts {
		by[p.Num] = p
	}
	p4, ok4 := by[4]
	p1, ok1 := by[1]
	p3, ok3 := by[3]
	logical := 0
	for n := 5; n <= 8; n++ {
		if p, ok := by[n]; ok && ok1 && p.First >= p1.First && p.Last <= p1.Last {
			logical++
		}
	}
	rep.ESXi = ok4 && p4.Type == 0x04 && p4.First == 32 && p4.Last == 8191 &&
		ok1 && (p1.Type == 0x05 || p1.Type == 0x0F) && p1.First == 8192 && p1.Last == 1843199 && logical == 4 &&
		(!ok3 || p3.Type == 0xFB)
	var b strings.Builder
	var list []string
	for _, p := range parts {
		list = append(list, fmt.Sprintf("%d: type 0x%02X, sectors %d-%d", p.Num, p.Type, p.First, p.Last))
	}
	if rep.ESXi {
		b.WriteString("MBR (msdos) partition table of an ESXi host upgraded from ESX(i) 4.x: 4 = the boot loader (type 4), extended 1 with the boot banks 5 and 6, vmkcore 7 and store/locker 8")
		if _, ok := by[2]; ok {
			b.WriteString(", scratch 2")
		}
		if ok3 {
			b.WriteString(", VMFS datastore 3 (type 0xFB)")
		}
		b.WriteString(". ESXi numbers these partitions as Linux does (5-8 are the logical ones, in chain order).")
	} else {
		b.WriteString("MBR (msdos) partition table, not a layout ESXi writes.")
	}
	fmt.Fprintf(&b, " Partitions: %s. This tool repairs GPT tables only; it does not change an MBR table.", strings.Join(list, "; "))
	rep.Text = b.String()
	return rep
}
