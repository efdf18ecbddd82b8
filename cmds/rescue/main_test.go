package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "rescue")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestProgram(t *testing.T) {
	bin := build(t)
	for _, tc := range []struct {
		name    string
		cmdline string
		code    int
		want    []string
		wantNot []string
	}{
		{name: "bad settings end in the shell with exit 2", cmdline: "console=ttyS0 rescue.action=frobnicate",
			code: 2, want: []string{`RESCUE: FAILED bad settings: rescue.action=frobnicate: unknown action "frobnicate"`, `"result": "failed"`}},
		{name: "interactive", cmdline: "console=ttyS0 quiet",
			code: 0, want: []string{"RESCUE: STEP drivers (1/2)", "RESCUE: STEP disks ok", "Disks:", "gptfix", "RESCUE: SHELL"}, wantNot: []string{"DONE"}},
		{name: "a missing target fails before writing", cmdline: "rescue.action=fix,verify rescue.target=/dev/nosuchdisk rescue.done=poweroff",
			code: 1, want: []string{"RESCUE: STEP target FAILED", "/dev/nosuchdisk is not among the disks found", "RESCUE: FAILED target:", `"status": "skipped"`},
			wantNot: []string{"RESCUE: STEP fix (", "DONE ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := filepath.Join(t.TempDir(), "cmdline")
			os.WriteFile(cl, []byte(tc.cmdline+"\n"), 0o644)
			cmd := exec.Command(bin, "-cmdline", cl, "-console", "-", "-no-shell", "-disk-wait", "2s")
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code {
				t.Errorf("exit code %d, want %d\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(string(out), w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}
