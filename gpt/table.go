package gpt

// Problem is one thing found wrong with a table or one of its copies.
type Problem struct {
	Code   string `json:"code"`   // stable machine-readable code, e.g. "header-crc", "backup-not-at-end"
	Copy   string `json:"copy"`   // "primary", "backup", "mbr" or "" for the table as a whole
	Detail string `json:"detail"` // plain-words explanation for a sysadmin
}

func (p Problem) String() string {
	if p.Copy == "" {
		return p.Detail
	}
	return p.Copy + ": " + p.Detail
}

// Copy is one GPT copy (primary or backup): a header and its entry array,
// both kept raw so that nothing is lost when they are written back.
type Copy struct {
	Which     string // "primary" or "backup"
	HeaderLBA uint64 // where the header was read
	Header    Header
	HeaderRaw []byte // the whole header sector
	Array     []byte // NumEntries*EntrySize bytes, as on disk
	Problems  []Problem
}

// Valid reports whether the copy has a usable header and array (signature,
// header CRC, array CRC and sane sizes); Problems lists what is not.
func (c *Copy) Valid() bool {
	if c == nil {
		return false
	}
	for _, p := range c.Problems {
		if fatalCodes[p.Code] {
			return false
		}
	}
	return true
}

// Slots splits the copy's entry array into slots, 1-based.
func (c *Copy) Slots() []Slot {
	if c == nil {
		return nil
	}
	return splitSlots(c.Array, int(c.Header.EntrySize))
}

// fatalCodes are the problem codes that make a copy unusable as a source
// of truth; the others (e.g. a stranded backup) leave its contents usable.
var fatalCodes = map[string]bool{
	"signature": true, "revision": true, "header-size": true, "header-crc": true,
	"array-crc": true, "entry-size": true, "entry-count": true, "array-range": true,
	"truncated": true, "my-lba": true, CodeBackupAmbiguous: true,
}

// Table is everything read from a disk or image: the protective MBR and
// both GPT copies, each as found, plus what was wrong with the whole.
type Table struct {
	SectorSize int
	DiskSize   int64  // bytes
	MBR        []byte // LBA 0, one sector
	Primary    *Copy  // nil when no header was found at LBA 1
	Backup     *Copy  // nil when no backup header was found
	// StrayBackup is a second valid backup header found at the other
	// candidate place (the primary's AlternateLBA or the last LBA) when
	// both hold one; Backup is then the one the primary points to when
	// the primary is valid, else the one at the last LBA. Nil in the
	// usual case.
	StrayBackup *Copy
	Problems    []Problem
}

// LastLBA is the last addressable LBA of the disk.
func (t *Table) LastLBA() uint64 { return uint64(t.DiskSize/int64(t.SectorSize)) - 1 }
