package imaging

import (
	"fmt"
	"io"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
)

// imageGPT parses the primary GPT at the start of an image stream and
// returns its last used LBA and where it says the backup header is.
func imageGPT(head []byte, sectorSize int) (lastUsed, alternate uint64, err error) {
	c, err := gpt.ParsePrimary(head, sectorSize)
	if err != nil {
		return 0, 0, err
	}
	return c.LastUsedLBA(), c.Header.AlternateLBA, nil
}

// describeGPT describes the GPT on a disk ("" when it has none).
func describeGPT(r io.ReaderAt, size int64, sectorSize int) string {
	t, err := gpt.Read(r, size, sectorSize)
	if err != nil || (t.Primary == nil && t.Backup == nil) {
		return ""
	}
	var b strings.Builder
	used := 0
	for _, s := range t.Slots() {
		if s.Used() {
			used++
		}
	}
	fmt.Fprintf(&b, "a GPT with %d partitions", used)
	if t.Best() == nil {
		b.WriteString(" (damaged: neither copy is valid)")
	}
	b.WriteString(":")
	for _, s := range t.Slots() {
		if !s.Used() {
			continue
		}
		e := s.Entry()
		fmt.Fprintf(&b, "\n  %3d  LBA %d-%d  %9s  %s  %q", s.Index, e.First, e.Last,
			gpt.HumanBytes(int64(e.Last-e.First+1)*int64(sectorSize)), e.Type, e.Name)
	}
	return b.String()
}

// gptLayout reads a disk's GPT and returns a writer of its layout file (nil
// when the disk has no GPT) and its last used LBA.
func gptLayout(r io.ReaderAt, size int64, sectorSize int) (func(io.Writer) error, uint64) {
	t, err := gpt.Read(r, size, sectorSize)
	if err != nil || (t.Primary == nil && t.Backup == nil) {
		return nil, 0
	}
	return func(w io.Writer) error { return gpt.SaveLayout(w, t) }, t.LastUsedLBA()
}

// fixupGPT reads the restored target's GPT, plans the repair its new size
// needs (the backup moved to the true end, every slot kept byte-identical:
// gpt.PlanFix with empty FixOptions) and applies it crash-safely with an
// undo file, on the restore's own held (exclusive) descriptor of the
// target. It returns the plan in words and whether anything was written.
func fixupGPT(dev *gpt.Device, undoPath string) (string, bool, error) {
	t, err := dev.ReadTable()
	if err != nil {
		return "", false, err
	}
	plan, err := gpt.PlanFix(t, gpt.FixOptions{})
	if err != nil {
		return "", false, err
	}
	if plan.Empty() {
		return "GPT checked after the copy: nothing to fix", false, nil
	}
	if err := plan.Apply(dev, undoPath); err != nil {
		return "", false, err
	}
	return fmt.Sprintf("GPT adapted to the target's size (undo file %s):\n%s", undoPath, strings.TrimRight(plan.String(), "\n")), true, nil
}
