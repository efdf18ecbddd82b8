package main

import (
	"fmt"
	"os"

	"github.com/esxi-rescue/rescue/gpt"
	rescuereport "github.com/esxi-rescue/rescue/rescue/report"
)

// loadUndo reads -undo FILE: an undo file, or the JSON report of a rescue
// run (report.json on the rescue stick, or what rescue.report= received),
// which holds the run's undo files whole; then the one for target is used
// (report.ExtractUndo) and note says which when that needs saying.
func loadUndo(path, target string) (u *gpt.Undo, note string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading the undo file: %w", err)
	}
	const maxReport = 256 << 20 // a report holds a console log and a few sectors
	if fi.Mode().IsRegular() && fi.Size() <= maxReport {
		if data, err := os.ReadFile(path); err == nil && rescuereport.IsReport(data) {
			u, note, err := rescuereport.ExtractUndo(data, target)
			if err != nil {
				return nil, "", fmt.Errorf("%s: %w", path, err)
			}
			return u, note, nil
		}
	}
	u, err = gpt.LoadUndo(path)
	return u, "", err
}
