package esxi

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
)

// The VMFS (and VMFS-L) LVM device header, 1 MiB into the partition. Its
// layout as vmfs-tools documents it (libvmfs/vmfs_volume.h: struct
// vmfs_volinfo_raw: magic 0x00, ver 0x04, lun 0x0E, name[28] 0x12, uuid
// 0x82; LVM info from 0x200) read together with ../shared/BRIEF.md: at
// 0x0C a SCSI disk id of the disk the volume was made on (type, length,
// LUN, device type, SCSI level, vendor[8], model[16], revision[4],
// id[44]); vmfs-tools' "name" is vendor+model+revision. That LUN is 16 bits
// (so vendor lands at 0x12) and that id[:length] holds the device
// identifier are our reading, not confirmed from VMware's source; the
// VMFS-L flag at 0xD2 is from the brief only.
const (
	LVMHeaderOffset = 1 << 20 // from the partition start
	lvmDiskIDOff    = 0x0C
	lvmDiskIDLen    = 78 // 1+1+2+1+1+8+16+4+44
	lvmUUIDOff      = 0x82
	lvmVMFSLFlagOff = 0xD2
	lvmHeaderLen    = 0x200
	// The filesystem descriptor with the volume label (vmfs-tools:
	// VMFS_FSINFO_BASE 0x1200000, magic 0x2fabf15e, label[128] at 0x1d).
	FSInfoOffset  = 0x1200000
	FSInfoMagic   = 0x2FABF15E
	fsLabelOff    = 0x1D
	fsLabelLen    = 128
	scsiIDDataLen = 44
)

// SCSIDiskID is the identity of a disk as VMFS stores it.
type SCSIDiskID struct {
	Type       byte   `json:"type"`
	Len        byte   `json:"len"`
	LUN        uint16 `json:"lun"`
	DeviceType byte   `json:"device_type"`
	SCSILevel  byte   `json:"scsi_level"`
	Vendor     string `json:"vendor"`
	Model      string `json:"model"`
	Revision   string `json:"revision"`
	ID         []byte `json:"id"` // the identifier, id[:Len] (at most 44 bytes)
}

// Empty reports whether the id names no disk at all.
func (d SCSIDiskID) Empty() bool {
	return len(bytes.Trim(d.ID, "\x00 ")) == 0 && strings.TrimSpace(d.Vendor) == "" && strings.TrimSpace(d.Model) == ""
}

// String renders the id for people: vendor, model, revision and the id as
// text when printable, else in hex.
func (d SCSIDiskID) String() string {
	return fmt.Sprintf("vendor %q model %q revision %q id %s", strings.TrimSpace(d.Vendor), strings.TrimSpace(d.Model), strings.TrimSpace(d.Revision), idText(d.ID))
}

func idText(b []byte) string {
	t := bytes.Trim(b, "\x00 ")
	if len(t) == 0 {
		return "(none)"
	}
	for _, r := range string(t) {
		if r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return hex.EncodeToString(t)
		}
	}
	return fmt.Sprintf("%q", t)
}

// marshal renders d in its 78 bytes.
func (d SCSIDiskID) marshal() []byte {
	b := make([]byte, lvmDiskIDLen)
	b[0], b[1] = d.Type, d.Len
	binary.LittleEndian.PutUint16(b[2:], d.LUN)
	b[4], b[5] = d.DeviceType, d.SCSILevel
	pad := func(dst []byte, s string) {
		copy(dst, bytes.Repeat([]byte{' '}, len(dst)))
		copy(dst, s)
	}
	pad(b[6:14], d.Vendor)
	pad(b[14:30], d.Model)
	pad(b[30:34], d.Revision)
	copy(b[34:], d.ID)
	return b
}

// LVMHeader is what the LVM device header says about the volume.
type LVMHeader struct {
	Version   uint32     `json:"version"`
	Disk      SCSIDiskID `json:"disk"`
	UUID      string     `json:"uuid"` // 32 hex digits
	VMFSLFlag byte       `json:"vmfsl_flag"`
}

// ErrNoLVMHeader: the bytes do not start with the VMFS magic.
var ErrNoLVMHeader = errors.New("no VMFS LVM header (magic 0xC001D00D)")

// ParseLVMHeader parses the header from b, the bytes at LVMHeaderOffset
// of the partition (at least 0x200).
func ParseLVMHeader(b []byte) (*LVMHeader, error) {
	if len(b) < lvmHeaderLen {
		return nil, fmt.Errorf("VMFS LVM header: %d bytes, want %d", len(b), lvmHeaderLen)
	}
	if binary.LittleEndian.Uint32(b) != VMFSMagic {
		return nil, ErrNoLVMHeader
	}
	d := b[lvmDiskIDOff : lvmDiskIDOff+lvmDiskIDLen]
	id := SCSIDiskID{Type: d[0], Len: d[1], LUN: binary.LittleEndian.Uint16(d[2:]), DeviceType: d[4], SCSILevel: d[5],
		Vendor: string(d[6:14]), Model: string(d[14:30]), Revision: string(d[30:34])}
	n := int(d[1])
	if n > scsiIDDataLen {
		n = scsiIDDataLen
	}
	id.ID = append([]byte(nil), d[34:34+n]...)
	return &LVMHeader{Version: binary.LittleEndian.Uint32(b[4:]), Disk: id,
		UUID: hex.EncodeToString(b[lvmUUIDOff : lvmUUIDOff+16]), VMFSLFlag: b[lvmVMFSLFlagOff]}, nil
}

// marshal renders the header's first 0x200 bytes (what Create writes).
func (h *LVMHeader) marshal() []byte {
	b := make([]byte, lvmHeaderLen)
	binary.LittleEndian.PutUint32(b, VMFSMagic)
	binary.LittleEndian.PutUint32(b[4:], h.Version)
	copy(b[lvmDiskIDOff:], h.Disk.marshal())
	u, _ := hex.DecodeString(h.UUID)
	copy(b[lvmUUIDOff:], u)
	b[lvmVMFSLFlagOff] = h.VMFSLFlag
	return b
}

// ParseFSLabel returns the volume label from the filesystem descriptor (b
// = the bytes at FSInfoOffset of the partition), "" when there is none.
func ParseFSLabel(b []byte) string {
	if len(b) < fsLabelOff+fsLabelLen || binary.LittleEndian.Uint32(b) != FSInfoMagic {
		return ""
	}
	l := b[fsLabelOff : fsLabelOff+fsLabelLen]
	if i := bytes.IndexByte(l, 0); i >= 0 {
		l = l[:i]
	}
	return strings.ToValidUTF8(string(l), "?")
}

// DiskIdentity is how a disk names itself: what the kernel learnt from
// SCSI INQUIRY and VPD page 0x83 (or NVMe Identify), or, for an image,
// what the reference's VMFS header says.
type DiskIdentity struct {
	Source string   `json:"source"` // where it was read
	Vendor string   `json:"vendor,omitempty"`
	Model  string   `json:"model,omitempty"`
	WWID   string   `json:"wwid,omitempty"`
	IDs    [][]byte `json:"ids,omitempty"` // designators / EUI / NGUID bytes, and text forms
}

// SysfsIdentity reads the identity of the disk whose sysfs directory is
// dir (/sys/block/NAME; tests pass a directory of their own): vendor,
// model, wwid and vpd_pg83 under device/ (SCSI, SATA through libata),
// wwid, eui, nguid (NVMe namespaces, in dir or device/).
func SysfsIdentity(dir string) (*DiskIdentity, error) {
	id := &DiskIdentity{Source: dir}
	read := func(names ...string) string {
		for _, n := range names {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				return strings.TrimSpace(string(b))
			}
		}
		return ""
	}
	id.Vendor = read("device/vendor")
	id.Model = read("device/model")
	id.WWID = read("device/wwid", "wwid")
	if pg, err := os.ReadFile(filepath.Join(dir, "device/vpd_pg83")); err == nil {
		id.IDs = append(id.IDs, ParseVPD83(pg)...)
	}
	for _, n := range []string{"eui", "nguid", "uuid"} {
		if h := read(n, "device/"+n); h != "" {
			if b, err := hex.DecodeString(strings.NewReplacer("-", "", " ", "", ":", "").Replace(h)); err == nil && len(bytes.Trim(b, "\x00")) > 0 {
				id.IDs = append(id.IDs, b)
			}
		}
	}
	if id.WWID != "" {
		id.IDs = append(id.IDs, []byte(id.WWID))
		if k, v, ok := strings.Cut(id.WWID, "."); ok {
			id.IDs = append(id.IDs, []byte(v))
			if k == "naa" || k == "eui" {
				if b, err := hex.DecodeString(v); err == nil {
					id.IDs = append(id.IDs, b)
				}
			}
		}
	}
	if id.Vendor == "" && id.Model == "" && len(id.IDs) == 0 {
		return nil, fmt.Errorf("esxi: %s: no vendor, model, wwid, VPD page 0x83 or NVMe id in sysfs", dir)
	}
	return id, nil
}

// ParseVPD83 returns the designators of a SCSI VPD page 0x83 (Device
// Identification, SPC-4 7.8.6): header of 4 bytes (page length at 2-3,
// big-endian), then designators of 4 header bytes (length at 3) and the
// designator itself. Malformed tails are ignored.
func ParseVPD83(pg []byte) [][]byte {
	if len(pg) < 4 || pg[1] != 0x83 {
		return nil
	}
	end := 4 + int(binary.BigEndian.Uint16(pg[2:]))
	if end > len(pg) {
		end = len(pg)
	}
	var out [][]byte
	for i := 4; i+4 <= end; {
		n := int(pg[i+3])
		if i+4+n > end {
			break
		}
		if d := pg[i+4 : i+4+n]; len(bytes.Trim(d, "\x00 ")) > 0 {
			out = append(out, append([]byte(nil), d...))
		}
		i += 4 + n
	}
	return out
}

// BlockSysfsDir returns /sys/dev/block/MAJ:MIN of the whole disk behind
// the block device path (a partition's parent), or an error for a file.
func BlockSysfsDir(path string) (string, error) {
	dir, err := blockSysfsDir(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		return filepath.Dir(dir), nil
	}
	return dir, nil
}

// Identity verdicts.
const (
	IdentitySame      = "same"
	IdentityDifferent = "different"
	IdentityUnknown   = "unknown"
)

// CompareIdentity tells whether the disk id a VMFS header stores names the
// disk id describes: the same when the stored identifier is one of the
// disk's (as bytes, or as text ignoring case and padding); different when
// the disk has identifiers and none matches, or has none and another
// vendor or model; unknown when either side says too little.
func CompareIdentity(h SCSIDiskID, id *DiskIdentity) (verdict, why string) {
	if h.Empty() {
		return IdentityUnknown, "the header stores no disk identity"
	}
	if id == nil {
		return IdentityUnknown, "the disk's own identity is not known"
	}
	stored := bytes.Trim(h.ID, "\x00 ")
	norm := func(b []byte) string { return strings.ToLower(strings.TrimSpace(strings.Trim(string(b), "\x00"))) }
	for _, c := range id.IDs {
		c = bytes.Trim(c, "\x00 ")
		if len(stored) > 0 && len(c) > 0 && (bytes.Equal(stored, c) || norm(stored) == norm(c) || norm(c) == hex.EncodeToString(stored) ||
			(len(norm(stored)) >= 8 && strings.HasSuffix(norm(c), norm(stored)))) {
			return IdentitySame, fmt.Sprintf("the stored id %s is the disk's", idText(stored))
		}
	}
	sameVM := strings.EqualFold(strings.TrimSpace(h.Vendor), strings.TrimSpace(id.Vendor)) && strings.EqualFold(strings.TrimSpace(h.Model), strings.TrimSpace(id.Model))
	switch {
	case len(id.IDs) > 0 && len(stored) > 0:
		return IdentityDifferent, fmt.Sprintf("the volume was made on %s; this disk is vendor %q model %q with id %s", h, id.Vendor, id.Model, idList(id))
	case !sameVM && (id.Vendor != "" || id.Model != ""):
		return IdentityDifferent, fmt.Sprintf("the volume was made on %s; this disk is vendor %q model %q", h, id.Vendor, id.Model)
	}
	return IdentityUnknown, fmt.Sprintf("the volume was made on %s; this disk (vendor %q model %q) has no identifier to compare", h, id.Vendor, id.Model)
}

func idList(id *DiskIdentity) string {
	if id.WWID != "" {
		return id.WWID
	}
	var s []string
	for _, b := range id.IDs {
		s = append(s, idText(b))
	}
	return strings.Join(s, ", ")
}

// SnapshotAdvice is what to run on the ESXi host when it takes a restored
// volume for a snapshot (VMware KB 1011387): list the unresolved volumes,
// then mount keeping the signature (or resignature).
func SnapshotAdvice(label string) string {
	if label == "" {
		label = "LABEL"
	}
	return fmt.Sprintf("ESXi will likely take the volume for a snapshot and leave it unmounted. On the host run `esxcli storage vmfs snapshot list`, then `esxcli storage vmfs snapshot mount -l %s` to mount it keeping its signature (or `esxcli storage vmfs snapshot resignature -l %s` for a new one)", label, label)
}

func blockSysfsDir(path string) (string, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "", fmt.Errorf("esxi: %w", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return "", fmt.Errorf("esxi: %s is not a block device", path)
	}
	dev := uint64(st.Rdev)
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	dir, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor))
	if err != nil {
		return "", fmt.Errorf("esxi: sysfs entry of %s: %w", path, err)
	}
	return dir, nil
}

// VolumeReport is one VMFS or VMFS-L volume and the disk it says it was
// made on.
type VolumeReport struct {
	Slot     int        `json:"slot"`
	Kind     string     `json:"kind"` // "VMFS" or "VMFS-L"
	Label    string     `json:"label,omitempty"`
	Header   *LVMHeader `json:"header,omitempty"`
	Error    string     `json:"error,omitempty"`    // why there is no header
	Identity string     `json:"identity,omitempty"` // IdentitySame, ... after CheckIdentity
	Why      string     `json:"why,omitempty"`
}

// windowsNames are the names Windows leaves on FAT volumes it mounts.
var windowsNames = []string{"$RECYCLE.BIN", "DESKTOP.INI", "System Volume Information", "RECYCLER", "Thumbs.db", "IndexerVolumeGuid"}

// inspectContents reads what Inspect reports beyond the boot rules: the
// LVM header of VMFS/VMFS-L volumes, Windows leftovers on FAT partitions.
func (rep *BootReport) inspectContents(r io.ReaderAt, st *readerStorage, size int64, ss int, e rawEntry, kind string) {
	start, psize, ok := partRange(e, ss, size)
	if !ok {
		return
	}
	switch e.Type {
	case TypeVMFS, TypeVMFSL:
		v := VolumeReport{Slot: e.Slot, Kind: "VMFS"}
		if e.Type == TypeVMFSL {
			v.Kind = "VMFS-L"
		}
		b := make([]byte, lvmHeaderLen)
		if psize < LVMHeaderOffset+lvmHeaderLen {
			v.Error = "partition too small for a VMFS header"
		} else if _, err := r.ReadAt(b, start+LVMHeaderOffset); err != nil {
			v.Error = err.Error()
		} else if h, err := ParseLVMHeader(b); err != nil {
			v.Error = err.Error()
		} else {
			v.Header = h
			fsi := make([]byte, 512)
			if psize >= FSInfoOffset+512 {
				if _, err := r.ReadAt(fsi, start+FSInfoOffset); err == nil {
					v.Label = ParseFSLabel(fsi)
				}
			}
		}
		rep.Volumes = append(rep.Volumes, v)
	case TypeBasicData, TypeEFISystem:
		fs, err := readFAT(st, start, psize)
		if err != nil {
			return
		}
		ents, err := fs.ReadDir(".")
		if err != nil {
			return
		}
		var found []string
		for _, d := range ents {
			for _, w := range windowsNames {
				if strings.EqualFold(d.Name(), w) {
					found = append(found, d.Name())
				}
			}
		}
		if len(found) > 0 {
			rep.WindowsSigns = append(rep.WindowsSigns, fmt.Sprintf("entry %d (%s): %s", e.Slot, kind, strings.Join(found, ", ")))
		}
	}
}

// CheckIdentity compares every volume's stored disk identity with id (the
// target disk's, or for an image the reference's) and warns about the
// snapshot trap where they differ. It returns the number of warnings.
func (rep *BootReport) CheckIdentity(id *DiskIdentity) int {
	n := 0
	for i := range rep.Volumes {
		v := &rep.Volumes[i]
		if v.Header == nil {
			continue
		}
		v.Identity, v.Why = CompareIdentity(v.Header.Disk, id)
		if v.Identity == IdentityDifferent {
			name := v.Label
			if name == "" {
				name = "its label"
			}
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("entry %d (%s %s): %s. %s", v.Slot, v.Kind, name, v.Why, SnapshotAdvice(v.Label)))
			n++
		}
	}
	return n
}

// IdentityOf is the identity a VMFS header stores, as a DiskIdentity: for
// an image, compare its volumes with the reference's (source names it).
func IdentityOf(h *LVMHeader, source string) *DiskIdentity {
	id := &DiskIdentity{Source: source, Vendor: strings.TrimSpace(h.Disk.Vendor), Model: strings.TrimSpace(h.Disk.Model)}
	if t := bytes.Trim(h.Disk.ID, "\x00 "); len(t) > 0 {
		id.IDs = append(id.IDs, t)
	}
	return id
}
