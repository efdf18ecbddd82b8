package tui

import (
	"time"

	"github.com/esxi-rescue/rescue/imaging"
)

// setProgress routes imaging's structured progress to the screen.
func setProgress(opt *imaging.Options, f func(Progress)) {
	if f == nil {
		return
	}
	opt.ProgressInterval = 500 * time.Millisecond // the screen's refresh; nothing else prints (ProgressNone)
	opt.OnProgress = func(p imaging.Progress) {
		f(Progress{Label: p.Phase, Done: p.Done, Total: p.Total, Rate: p.Rate, ETA: p.ETA})
	}
}
