package tui

import (
	"fmt"
	"os"
	"strings"
)

// PrintkFile holds the kernel's console log levels.
const PrintkFile = "/proc/sys/kernel/printk"

// QuietConsole keeps kernel messages off the console while the screen
// is up: it lowers the console log level to 1 (only emergencies) and
// returns a function that puts the old levels back. The kernel still
// records every message: dmesg shows them.
func QuietConsole(path string) (restore func() error, err error) {
	old, err := os.ReadFile(path)
	if err != nil {
		return func() error { return nil }, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		return func() error { return nil }, fmt.Errorf("lowering the console log level: %w", err)
	}
	levels := strings.Join(strings.Fields(string(old)), " ") + "\n"
	return func() error { return os.WriteFile(path, []byte(levels), 0o644) }, nil
}
