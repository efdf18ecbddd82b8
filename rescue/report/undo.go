package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/esxi-rescue/rescue/gpt"
)

// IsReport reports whether data is a rescue report (any version of the
// schema): a JSON object whose "schema" starts with "esxi-rescue-report/".
func IsReport(data []byte) bool {
	var head struct {
		Schema string `json:"schema"`
	}
	return json.Unmarshal(data, &head) == nil && strings.HasPrefix(head.Schema, "esxi-rescue-report/")
}

// ExtractUndo takes the undo file for device out of a report, so that
// `gptfix -undo REPORT` works on the report itself. device matches an
// undo file whose device has the same base name (/dev/sda, sda); when no
// name matches and the report holds exactly one undo file, that one is
// taken (the disk may have another name on another machine; ApplyUndo
// still checks its size). With several for the device, the newest — the
// last GPT write of the run — is taken, and note says so. The undo file's
// own checksum is checked (gpt.ParseUndo).
func ExtractUndo(data []byte, device string) (u *gpt.Undo, note string, err error) {
	var r struct {
		Schema string `json:"schema"`
		Run    string `json:"run"`
		Undo   []Undo `json:"undo"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, "", fmt.Errorf("the rescue report is not valid JSON: %w", err)
	}
	if r.Schema != Schema {
		return nil, "", fmt.Errorf("the rescue report has schema %q; this gptfix reads %q", r.Schema, Schema)
	}
	if len(r.Undo) == 0 {
		return nil, "", fmt.Errorf("the rescue report of run %s holds no undo file (nothing was written to a partition table)", r.Run)
	}
	var match []Undo
	for _, x := range r.Undo {
		if device != "" && filepath.Base(x.Device) == filepath.Base(device) {
			match = append(match, x)
		}
	}
	switch {
	case len(match) == 0 && len(r.Undo) == 1:
		match = r.Undo
		if device != "" {
			note = fmt.Sprintf("the report's only undo file was made for %s", r.Undo[0].Device)
		}
	case len(match) == 0:
		var devs []string
		for _, x := range r.Undo {
			devs = append(devs, x.Device)
		}
		return nil, "", fmt.Errorf("the rescue report holds undo files for %s, none for %s", strings.Join(devs, ", "), device)
	}
	x := match[len(match)-1]
	if len(match) > 1 {
		note = fmt.Sprintf("the report holds %d undo files for %s; using the newest (step %s); the earlier ones undo earlier writes", len(match), x.Device, x.Step)
	}
	u, err = gpt.ParseUndo(bytes.NewReader(x.Document))
	if err != nil {
		return nil, "", fmt.Errorf("the undo file of step %s in the rescue report: %w", x.Step, err)
	}
	return u, note, nil
}
