package tui

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/esxi-rescue/rescue/gpt"
	"github.com/esxi-rescue/rescue/imaging"
)

// field is one labelled text field of a form.
type field struct {
	label, help string
	in          textinput.Model
}

// form is a few text fields; Up/Down/Tab move between them.
type form struct {
	fields []field
	cur    int
}

func (f *form) update(msg tea.Msg) (enter bool, cmd tea.Cmd) {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch k.String() {
		case "enter":
			return true, nil
		case "up", "shift+tab":
			f.focus(f.cur - 1)
			return false, nil
		case "down", "tab":
			f.focus(f.cur + 1)
			return false, nil
		}
	}
	f.fields[f.cur].in, cmd = f.fields[f.cur].in.Update(msg)
	return false, cmd
}

func (f *form) focus(i int) {
	f.fields[f.cur].in.Blur()
	f.cur = (i + len(f.fields)) % len(f.fields)
	f.fields[f.cur].in.Focus()
}

func (f *form) value(i int) string { return strings.TrimSpace(f.fields[i].in.Value()) }

func (f *form) render(m *Model, ls []line) ([]line, int) {
	focus := -1
	for i, fl := range f.fields {
		k := kPlain
		if i == f.cur {
			k = kHead
		}
		ls = append(ls, line{fl.label, k})
		if fl.help != "" {
			ls = append(ls, m.wrap(fl.help, 2, kDim)...)
		}
		if i == f.cur {
			focus = len(ls)
		}
		ls = append(ls, line{inputView(m, fl.in), kPlain})
	}
	return ls, focus
}

// copyFlow is Restore (image -> disk) or Back up (disk -> image file), in
// steps: the form, the disk list, and for a restore the typed device
// name; then the task with its progress bar.
type copyFlow struct {
	backup bool
	step   int
	form   form
	pick   list
	disks  []DiskReport // the disks offered
	in     textinput.Model
}

func newRestore(m *Model) *copyFlow {
	c := &copyFlow{}
	c.form.fields = []field{
		{label: "Image to restore", help: "a path (a mounted share, the rescue stick) or an http(s):// URL; gzip, zstd and xz are recognised", in: newInput(m, "(e.g. http://10.0.0.5/esxi.img.zst)")},
		{label: "SHA-256 of the image (optional)", help: "64 hex digits; a mismatch stops before the partition table is written", in: newInput(m, "(empty: not checked)")},
	}
	c.form.fields[1].in.Blur()
	return c
}

func newBackup(m *Model) *copyFlow {
	c := &copyFlow{backup: true}
	c.form.fields = []field{
		{label: "Save the image as", help: "a file path (ending .zst: zstd compressed); a .sha256 manifest, .gpt.json layout and .bmap block map are written next to it", in: newInput(m, "(e.g. /mnt/backup/esxi.img.zst)")},
	}
	c.offer(m)
	return c
}

// offer lists the disks: for a restore those that may be written (never
// the rescue stick, mounted or read-only disks), for a back-up all but
// the rescue stick.
func (c *copyFlow) offer(m *Model) {
	c.disks = nil
	if m.hw == nil {
		return
	}
	for _, d := range m.hw.Disks {
		if d.Facts.RescueMedium || (!c.backup && (d.Writable() != nil || d.Disk.Path == c.form.value(0))) {
			continue
		}
		c.disks = append(c.disks, d)
	}
}

func (c *copyFlow) title() string {
	if c.backup {
		return "back up"
	}
	return "restore"
}

func (c *copyFlow) keys() string {
	switch {
	case c.isList():
		return "Up/Down choose the disk  Enter next  Esc back"
	case c.isConfirm():
		return "type the device name, Enter  Esc back (nothing written)"
	}
	return "Up/Down/Tab next field  Enter next  Esc back"
}

func (c *copyFlow) isList() bool    { return (c.backup && c.step == 0) || (!c.backup && c.step == 1) }
func (c *copyFlow) isConfirm() bool { return !c.backup && c.step == 2 }

func (c *copyFlow) items() []item {
	var its []item
	for i, d := range c.disks {
		key := ""
		if i < 9 {
			key = fmt.Sprint(i + 1)
		}
		its = append(its, item{key: key, label: d.Disk.Describe(), sub: d.Verdict, kind: kindOf(d.Health),
			run: func(m *Model) tea.Cmd { c.step++; c.in = newInput(m, "(type the device name)"); return nil }})
	}
	return its
}

// esc goes one step back.
func (c *copyFlow) esc(m *Model) tea.Cmd {
	if c.step == 0 {
		m.pop()
	} else {
		c.step--
		m.flash = ""
	}
	return nil
}

// offerScanned offers the disks once the scan is back: a flow begun
// while the disks were still being examined (a key pressed right after
// the start) lists them when they are known.
func (c *copyFlow) offerScanned(m *Model) {
	if c.isList() && len(c.disks) == 0 && m.hw != nil {
		c.offer(m)
	}
}

func (c *copyFlow) update(m *Model, msg tea.Msg) tea.Cmd {
	c.offerScanned(m)
	switch {
	case c.isList():
		if len(c.disks) == 0 {
			return nil
		}
		return c.pick.handle(m, c.items(), msg)
	case c.isConfirm():
		if k, ok := msg.(tea.KeyMsg); ok && k.String() == "enter" {
			d := c.disks[c.pick.cur]
			typed := strings.TrimSpace(c.in.Value())
			if typed != d.Disk.Path {
				m.flash = fmt.Sprintf("You typed %q, not %s: nothing written.", typed, d.Disk.Path)
				c.in.SetValue("")
				return nil
			}
			return c.run(m, d)
		}
		var cmd tea.Cmd
		c.in, cmd = c.in.Update(msg)
		return cmd
	}
	enter, cmd := c.form.update(msg)
	if !enter {
		return cmd
	}
	if c.form.value(0) == "" {
		m.flash = "Say where the image is first."
		c.form.focus(0)
		return nil
	}
	if !c.backup {
		if s := c.form.value(1); s != "" && !isHex64(s) {
			m.flash = "The SHA-256 must be 64 hex digits (or empty)."
			c.form.focus(1)
			return nil
		}
		c.offer(m)
		c.step = 1
		return nil
	}
	if len(c.disks) == 0 {
		m.flash = "No disk to back up."
		return nil
	}
	// An existing image is never overwritten from here (imaging refuses
	// too: the back-up runs without -yes); the person picks another name.
	if fi, err := os.Stat(c.form.value(0)); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
		m.flash = fmt.Sprintf("%s exists (%s): nothing written; give another name.", c.form.value(0), gpt.HumanBytes(fi.Size()))
		return nil
	}
	return c.run(m, c.disks[c.pick.cur])
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range strings.ToLower(s) {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func (c *copyFlow) run(m *Model, d DiskReport) tea.Cmd {
	job := CopyJob{Src: c.form.value(0), Dst: d.Disk.Path, SHA256: strings.ToLower(c.form.valueOr(1)), Refuse: RescueDisks(m.hw)}
	what := "restoring " + job.Src + " onto " + d.Disk.Path
	if c.backup {
		job = CopyJob{Src: d.Disk.Path, Dst: c.form.value(0), Compress: compressionOf(c.form.value(0))}
		what = "backing up " + d.Disk.Path + " to " + job.Dst
	}
	m.pop()
	return m.startTask(what, func(t *taskCtx) (string, kind, error) {
		res, err := m.b.Copy(t.ctx, job, t.progress)
		return copySummary(job, res), kPlain, err
	})
}

func (f *form) valueOr(i int) string {
	if i < len(f.fields) {
		return f.value(i)
	}
	return ""
}

// compressionOf picks the back-up's compression from the file name.
func compressionOf(path string) string {
	switch {
	case strings.HasSuffix(path, ".zst"):
		return "zstd"
	case strings.HasSuffix(path, ".gz"):
		return "gzip"
	}
	return "none"
}

// copySummary is the end-of-copy account.
func copySummary(job CopyJob, r *imaging.Result) string {
	if r == nil {
		return ""
	}
	var b strings.Builder
	rate := float64(r.Bytes) / max(r.Duration.Seconds(), 1e-3)
	fmt.Fprintf(&b, "%s -> %s\n%s in %s (%s/s)", job.Src, job.Dst, gpt.HumanBytes(r.Bytes), r.Duration.Round(100*time.Millisecond), gpt.HumanBytes(int64(rate)))
	if r.Compression != "" {
		fmt.Fprintf(&b, ", compression: %s", r.Compression)
	}
	if r.SHA256 != "" {
		fmt.Fprintf(&b, "\nSHA-256 %s", r.SHA256)
		if job.SHA256 != "" && strings.EqualFold(job.SHA256, r.SHA256) {
			b.WriteString(" (matches the one you gave)")
		}
	}
	if r.Verified {
		b.WriteString("\nRead back and verified.")
	}
	if r.GPTFixup != "" {
		b.WriteString("\nPartition table: " + r.GPTFixup)
	}
	if r.UndoPath != "" {
		b.WriteString("\nUndo file of the partition table fix-up: " + r.UndoPath)
	}
	if r.ManifestPath != "" {
		b.WriteString("\nChecksums: " + r.ManifestPath)
	}
	if r.LayoutPath != "" {
		b.WriteString("\nLayout: " + r.LayoutPath)
	}
	return b.String()
}

func (c *copyFlow) body(m *Model) ([]line, int) {
	var ls []line
	switch {
	case c.isList():
		what := "Disk to write the image onto (the rescue stick, mounted and read-only disks are not offered)"
		if c.backup {
			what = "Disk to back up"
		}
		ls = append(ls, m.wrap(what, 0, kHead)...)
		c.offerScanned(m)
		if len(c.disks) == 0 {
			if m.hw == nil && m.scanErr == "" {
				ls = append(ls, line{"  Examining the disks...", kDim})
			} else {
				ls = append(ls, line{"  no disk can be offered", kWarn})
			}
			return ls, -1
		}
		return c.pick.render(m, ls, c.items(), 0)
	case c.isConfirm():
		d := c.disks[c.pick.cur]
		ls = append(ls, m.wrap(fmt.Sprintf("This overwrites %s with %s. Everything on it now is lost: %s", d.Disk.Describe(), c.form.value(0), d.Verdict), 0, kWarn)...)
		if sum := c.form.value(1); sum != "" {
			ls = append(ls, m.wrap("The image must have SHA-256 "+sum+".", 0, kPlain)...)
		}
		ls = append(ls, line{"", kPlain})
		ls = append(ls, m.wrap("To go ahead, type the device name ("+d.Disk.Path+") and press Enter:", 0, kPlain)...)
		ls = append(ls, line{inputView(m, c.in), kPlain})
		return ls, len(ls) - 1
	}
	if c.backup && len(c.disks) > 0 {
		ls = append(ls, line{"Backing up " + c.disks[c.pick.cur].Disk.Describe(), kPlain})
	}
	return c.form.render(m, ls)
}
