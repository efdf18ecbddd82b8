package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/esxi-rescue/rescue/rescue/console"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"github.com/esxi-rescue/rescue/rescue/system"
	"github.com/esxi-rescue/rescue/rescue/tui"
	"golang.org/x/term"
)

// screenOpts are the flags of the interactive screen.
type screenOpts struct {
	mode    string // auto: the consoles; off: banner and shell; tty: this terminal
	disks   string // comma list of image files used as the disks (tests)
	undoDir string
	printk  string
	drivers string      // the driver step's summary
	stick   *keep.Stick // this run's directory on the rescue stick (record.Start); nil = look for one
}

// terminals opens the screen's terminals: the console devices (auto) or
// stdin/stdout (tty).
func terminals(o screenOpts, names []string) []tui.Terminal {
	plain, color := tui.ModeFor(os.Getenv("TERM"), os.Getenv("NO_COLOR") != "")
	if o.mode == "tty" {
		return []tui.Terminal{{Name: "stdin", In: os.Stdin, Out: os.Stdout, Plain: plain || !term.IsTerminal(int(os.Stdin.Fd())), Color: color}}
	}
	var ts []tui.Terminal
	for _, n := range names {
		f, err := os.OpenFile(n, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		ts = append(ts, tui.Terminal{Name: n, In: f, Out: f, Plain: plain || !term.IsTerminal(int(f.Fd())), Color: color})
	}
	return ts
}

// runScreen shows the screen; it returns when the person leaves it and
// does what they chose (shell, reboot, power off, boot ESXi). With
// shellExits (rescue -menu, started from the shell) Shell just exits.
func runScreen(con *console.Console, o screenOpts, names []string, noShell, shellExits bool) {
	b := &tui.Backend{Sys: inventory.Sys{Root: "/"}, Drivers: o.drivers}
	if o.disks != "" {
		b.Files = strings.Split(o.disks, ",")
	}
	b.UndoSite = func() (*tui.UndoSite, error) {
		if o.undoDir != "" {
			return &tui.UndoSite{Dir: o.undoDir, Where: func(n string) string { return filepath.Join(o.undoDir, n) }}, nil
		}
		return stickSite(o.stick)
	}
	ts := terminals(o, names)
	restore := func() error { return nil }
	if o.printk != "" { // "": not on the console (an SSH session's screen)
		var err error
		restore, err = tui.QuietConsole(o.printk)
		if err != nil && o.disks == "" {
			con.Printf("screen: %v (kernel messages may show)", err)
		}
	}
	con.Drain()
	res, err := tui.Run(context.Background(), b, version, ts)
	restore()
	if err != nil {
		con.Printf("screen: %v", err)
	}
	con.Printf("screen: %s %s", res.Action, res.Disk)
	switch res.Action {
	case tui.ActReboot, tui.ActPowerOff:
		if noShell {
			os.Exit(0)
		}
		err = system.PowerOff(res.Action == tui.ActReboot, con.Drain)
		con.Marker("FAILED %s: %v", res.Action, err)
	case tui.ActBoot:
		if noShell {
			os.Exit(0)
		}
		con.Printf("booting ESXi from %s (kexec)", res.Disk)
		con.Drain()
		err = system.ExecBoot(res.Disk)
		con.Marker("FAILED boot: %v", err)
	}
	banner(con, b)
	con.Marker("SHELL")
	toShell(con, noShell || shellExits, 0)
}

// banner prints the shell's greeting for the disks found.
func banner(con *console.Console, b *tui.Backend) {
	disks, _ := b.Disks()
	var nics []inventory.NIC
	if len(b.Files) == 0 {
		nics, _ = inventory.Sys{Root: "/"}.NICs()
	}
	system.Banner(con, disks, nics)
	fmt.Fprintln(con, "To come back to the menu: rescue -menu")
}

// stickSite mounts this run's directory on the rescue stick
// (/rescue-logs/<host>-<time>/ on its FAT partition) for an undo file.
func stickSite(st *keep.Stick) (*tui.UndoSite, error) {
	if st == nil {
		var err error
		if st, err = keep.New(keep.Options{}); err != nil {
			return nil, err
		}
	}
	dir, unmount, err := st.Mount()
	if err != nil {
		return nil, err
	}
	return &tui.UndoSite{Dir: dir, Release: unmount,
		Where: func(n string) string { return st.Where(n) + " on the rescue stick (survives a reboot)" }}, nil
}
