package gpt

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// maxUndoBytes bounds an undo file: a plan writes at most a few hundred
// sectors, so anything bigger is not one.
const maxUndoBytes = 64 << 20

// UndoFormat names the undo file format (first field of the JSON).
const UndoFormat = "gptfix-undo/1"

// Undo is the content of an undo file: every sector a plan was about to
// change, with its bytes before and after, and the disk it belongs to.
type Undo struct {
	Created    time.Time    `json:"created"`
	Device     string       `json:"device"` // path the plan was applied to (for information)
	DiskSize   int64        `json:"disk_size"`
	SectorSize int          `json:"sector_size"`
	Records    []UndoRecord `json:"records"` // in the order they were written
}

// UndoRecord is one sector: where, and its bytes before and after.
type UndoRecord struct {
	Region    string `json:"region"`
	LBA       uint64 `json:"lba"`
	Offset    int64  `json:"offset"`
	Old       string `json:"old"` // hex
	New       string `json:"new"` // hex
	OldSHA256 string `json:"old_sha256"`
}

// undoEnvelope is the file: the body exactly as serialised and its SHA-256,
// so that any damage to the file is detected before a byte is written.
type undoEnvelope struct {
	Format string          `json:"format"`
	SHA256 string          `json:"sha256"`
	Body   json.RawMessage `json:"body"`
}

// MarshalUndo serialises u with its checksum.
func MarshalUndo(u *Undo) ([]byte, error) {
	body, err := json.Marshal(u)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body) // over the compact form; see ParseUndo
	out, err := json.MarshalIndent(undoEnvelope{Format: UndoFormat, SHA256: hex.EncodeToString(sum[:]), Body: body}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// LoadUndo reads and checks an undo file: format, checksum, and that every
// record is a whole sector whose old bytes match their own checksum.
func LoadUndo(path string) (*Undo, error) {
	notUndo := fmt.Errorf("gpt: %s is not an undo file (not a regular file of at most %d bytes)", path, maxUndoBytes)
	// Checked before opening, and opened non-blocking: open(2) of a FIFO
	// would wait for a writer.
	if fi, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("gpt: reading the undo file: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, notUndo
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("gpt: reading the undo file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxUndoBytes {
		return nil, notUndo
	}
	return ParseUndo(f)
}

// UndoPath returns a path for a new undo file in dir that does not exist
// yet: prefix, the UTC time to the nanosecond, the process ID and, should
// that name be taken, a counter ("gptfix-undo-sda-20260101T120000.123456789Z-4242.json").
// Two runs, even in the same second, never get the same name, and Apply
// creates the file with O_EXCL, so none can overwrite another's.
func UndoPath(dir, prefix string) string {
	base := fmt.Sprintf("%s-%s-%d", prefix, time.Now().UTC().Format("20060102T150405.000000000Z"), os.Getpid())
	for n := 0; ; n++ {
		name := base + ".json"
		if n > 0 {
			name = fmt.Sprintf("%s-%d.json", base, n)
		}
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return p
		}
	}
}

// ParseUndo parses an undo file from r (see LoadUndo).
func ParseUndo(r io.Reader) (*Undo, error) {
	var env undoEnvelope
	dec := json.NewDecoder(io.LimitReader(r, maxUndoBytes))
	if err := dec.Decode(&env); err != nil {
		return nil, fmt.Errorf("gpt: the undo file is not valid JSON: %w", err)
	}
	if env.Format != UndoFormat {
		return nil, fmt.Errorf("gpt: not an undo file (format %q, want %q)", env.Format, UndoFormat)
	}
	// The checksum covers the body in compact form, so indentation does
	// not matter but every key and value does.
	var body bytes.Buffer
	if err := json.Compact(&body, env.Body); err != nil {
		return nil, fmt.Errorf("gpt: undo file body: %w", err)
	}
	sum := sha256.Sum256(body.Bytes())
	if hex.EncodeToString(sum[:]) != strings.ToLower(env.SHA256) {
		return nil, fmt.Errorf("gpt: the undo file is damaged: its checksum does not match its content")
	}
	var u Undo
	if err := json.Unmarshal(env.Body, &u); err != nil {
		return nil, fmt.Errorf("gpt: undo file body: %w", err)
	}
	if u.SectorSize != 512 && u.SectorSize != 4096 {
		return nil, fmt.Errorf("gpt: undo file: sector size %d is not supported", u.SectorSize)
	}
	for i, rec := range u.Records {
		old, err1 := hex.DecodeString(rec.Old)
		nw, err2 := hex.DecodeString(rec.New)
		if err1 != nil || err2 != nil || len(old) != u.SectorSize || len(nw) != u.SectorSize {
			return nil, fmt.Errorf("gpt: undo file record %d (LBA %d) is not a whole sector", i+1, rec.LBA)
		}
		if s := sha256.Sum256(old); hex.EncodeToString(s[:]) != rec.OldSHA256 {
			return nil, fmt.Errorf("gpt: undo file record %d (LBA %d): checksum mismatch", i+1, rec.LBA)
		}
		if rec.Offset != int64(rec.LBA)*int64(u.SectorSize) || rec.Offset < 0 || rec.Offset+int64(u.SectorSize) > u.DiskSize {
			return nil, fmt.Errorf("gpt: undo file record %d: LBA %d is not on a disk of %d bytes", i+1, rec.LBA, u.DiskSize)
		}
	}
	return &u, nil
}

// String summarises the undo file for a sysadmin.
func (u *Undo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Undo file made %s for %s (%s, %d-byte sectors): %d sector(s):\n",
		u.Created.Format(time.RFC3339), u.Device, HumanBytes(u.DiskSize), u.SectorSize, len(u.Records))
	for _, r := range u.Records {
		fmt.Fprintf(&b, "  LBA %-12d %s\n", r.LBA, r.Region)
	}
	return b.String()
}

func newUndo(device string, size int64, ss int, ws []Write, cur [][]byte) *Undo {
	u := &Undo{Created: time.Now().UTC(), Device: device, DiskSize: size, SectorSize: ss}
	for i, w := range ws {
		sum := sha256.Sum256(cur[i])
		u.Records = append(u.Records, UndoRecord{Region: w.Region, LBA: w.LBA, Offset: w.Offset,
			Old: hex.EncodeToString(cur[i]), New: hex.EncodeToString(w.New), OldSHA256: hex.EncodeToString(sum[:])})
	}
	return u
}

// ApplyUndo restores the sectors saved in the undo file at undoPath onto
// dev. It checks the file's checksum and that dev has the disk size and
// sector size the file was made for, and refuses when a sector holds
// neither its old nor its new content (something else wrote there since).
// The primary side is restored first, then the backup, with a flush after
// each, so that at every moment one of the two copies is whole.
func ApplyUndo(dev *Device, undoPath string) error {
	u, err := LoadUndo(undoPath)
	if err != nil {
		return err
	}
	return applyUndo(dev.File, dev.Size, dev.SectorSize, u)
}

// ApplyUndoTo is ApplyUndo on any Disk of size bytes with the given
// sector size, with an already loaded undo file.
func ApplyUndoTo(d Disk, size int64, sectorSize int, u *Undo) error {
	return applyUndo(d, size, sectorSize, u)
}

func applyUndo(d Disk, size int64, ss int, u *Undo) error {
	if size != u.DiskSize || ss != u.SectorSize {
		return fmt.Errorf("gpt: the undo file is for a disk of %d bytes with %d-byte sectors; this one has %d bytes with %d-byte sectors",
			u.DiskSize, u.SectorSize, size, ss)
	}
	type rec struct {
		w        Write
		old, new []byte
	}
	var recs []rec
	var conflicts []string
	for _, r := range u.Records {
		old, _ := hex.DecodeString(r.Old)
		nw, _ := hex.DecodeString(r.New)
		cur := make([]byte, ss)
		if err := readAt(d, cur, r.Offset); err != nil {
			return fmt.Errorf("gpt: reading LBA %d: %w", r.LBA, err)
		}
		switch {
		case bytes.Equal(cur, old):
			continue // already as before
		case bytes.Equal(cur, nw):
		default:
			conflicts = append(conflicts, fmt.Sprintf("LBA %d (%s)", r.LBA, r.Region))
		}
		recs = append(recs, rec{Write{Region: r.Region, LBA: r.LBA, Offset: r.Offset, New: old}, old, nw})
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("gpt: refusing to undo: %d sector(s) hold neither the content before nor after the change, so something else wrote to the disk since: %v",
			len(conflicts), limitList(conflicts, 8))
	}
	// Primary side (and MBR) first, newest write first; then the backup.
	for _, backupSide := range []bool{false, true} {
		var done []Write
		for i := len(recs) - 1; i >= 0; i-- {
			if recs[i].w.backup() != backupSide {
				continue
			}
			if err := writeSector(d, recs[i].w); err != nil {
				return err
			}
			done = append(done, recs[i].w)
		}
		if len(done) > 0 {
			if err := syncDev(d, "restored sectors"); err != nil {
				return err
			}
		}
	}
	var all []Write
	for _, r := range recs {
		all = append(all, r.w)
	}
	return verifySectors(d, all, func(w Write) []byte { return w.New })
}
