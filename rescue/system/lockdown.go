package system

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// lockdownFile is where the kernel tells its lockdown mode.
const lockdownFile = "/sys/kernel/security/lockdown"

// lockdownMode returns the active mode from the lockdown file's contents,
// e.g. "none [integrity] confidentiality" -> "integrity".
func lockdownMode(contents string) string {
	for _, f := range strings.Fields(contents) {
		if strings.HasPrefix(f, "[") && strings.HasSuffix(f, "]") {
			return strings.Trim(f, "[]")
		}
	}
	return ""
}

// CheckKexecAllowed returns an error when the kernel is locked down (as
// Debian's kernel is when booted with Secure Boot on), which makes kexec,
// and so booting ESXi from the rescue system, impossible. A kernel without
// the lockdown file (no LSM) allows it.
func CheckKexecAllowed() error {
	b, err := os.ReadFile(lockdownFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", lockdownFile, err)
	}
	if m := lockdownMode(string(b)); m != "" && m != "none" {
		return fmt.Errorf("the kernel is locked down (%s, Secure Boot is on): it cannot kexec into ESXi; "+
			"turn Secure Boot off to use rescue.done=boot, or reboot and let the firmware boot the disk", m)
	}
	return nil
}
