// Command rescue is the rescue initramfs's uinit: it reads the hands-off
// settings from the kernel command line (rescue.action=, rescue.image=,
// rescue.target=, rescue.ref=, rescue.done=, rescue.report=, ip=,
// BOOTIF=), loads drivers, finds disks and network, and runs restore, fix,
// verify and boot as asked, logging every step on the console as
// "RESCUE: STEP ...". It ends with "RESCUE: DONE ok" or
// "RESCUE: FAILED <reason>" and then does what rescue.done= says — a
// failure always ends in the shell, never in a reboot.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/esxi-rescue/rescue/rescue/console"
	"github.com/esxi-rescue/rescue/rescue/flow"
	"github.com/esxi-rescue/rescue/rescue/inventory"
	"github.com/esxi-rescue/rescue/rescue/keep"
	"github.com/esxi-rescue/rescue/rescue/record"
	"github.com/esxi-rescue/rescue/rescue/report"
	"github.com/esxi-rescue/rescue/rescue/system"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	procCmdline := flag.String("cmdline", "/proc/cmdline", "kernel command line to read the settings from")
	extra := flag.String("settings", "", "extra settings file (kernel command line syntax, # comments) read after -cmdline; its keys win")
	consoles := flag.String("console", "", "comma list of console devices to log to (default: the kernel's console= devices, else /dev/console); - for stdout")
	diskWait := flag.Duration("disk-wait", 15*time.Second, "how long to wait for disks to appear after the drivers load")
	noShell := flag.Bool("no-shell", false, "exit instead of starting the shell or powering off (for trying it outside the initramfs)")
	var so screenOpts
	flag.StringVar(&so.mode, "screen", "auto", "interactive mode: auto = the menu on every console, tty = on this terminal, off = the banner and the shell")
	menu := flag.Bool("menu", false, "only show the menu on this terminal (from the shell: back to the menu), no hands-off flow")
	flag.StringVar(&so.disks, "disks", "", "comma list of image `FILES` the menu treats as the disks (for tests and trying it out)")
	flag.StringVar(&so.undoDir, "undo-dir", "", "`DIR` for the undo files of fixes and restores (default: the rescue stick when booted from one, else /tmp)")
	flag.StringVar(&so.printk, "printk", "/proc/sys/kernel/printk", "the kernel's console log level `FILE` (lowered while the menu is up; empty: left alone, as for an SSH session)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `usage: rescue [flags]

The ESXi rescue system's init program (u-root uinit). Without rescue.* keys on
the kernel command line it shows the menu on the consoles (a numbered
plain-text menu when TERM=dumb); -screen off gives the banner and the shell. With
  rescue.action=restore,fix,verify,boot,shell  rescue.image=PATH|URL  rescue.sha256=HEX
  rescue.target=/dev/X|auto  rescue.ref=image|esxi|PATH|URL  rescue.done=reboot|poweroff|shell|boot
  rescue.report=URL  rescue.job=URL  rescue.syslog=[udp://|tcp://]HOST[:PORT]  ip=dhcp|<client>:<server>:<gw>:<netmask>:<host>:<dev>:<autoconf>:<dns>  BOOTIF=01-MAC
it runs the hands-off flow. Exit status: 0 success, 1 a step failed, 2 bad settings.

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *menu {
		so.mode = "tty"
		runScreen(console.New(os.Stdout), so, nil, *noShell, true)
	}

	raw, _ := os.ReadFile(*procCmdline)
	names := console.Names(string(raw))
	switch *consoles {
	case "":
	case "-":
		names = nil
	default:
		names = strings.Split(*consoles, ",")
	}
	con := console.Open(names, os.Stdout)
	defer con.Close()
	con.Printf("ESXi rescue %s starting", version)

	rep := report.New(version)
	rep.Cmdline = cmdline.RedactLine(strings.TrimSpace(string(raw)))
	rep.Kernel = release()
	rec := record.Start(con, rep, "/") // the log, the rescue stick, live status

	args, err := cmdline.Read(*procCmdline, *extra)
	var cfg *cmdline.Config
	if err == nil {
		cfg, err = cmdline.Parse(args)
	}
	if err != nil {
		con.Marker("FAILED bad settings: %v", err)
		rep.Finish(fmt.Errorf("bad settings: %w", err))
		con.Write(rep.ConsoleJSON())
		toShell(con, *noShell, 2)
	}
	rep.Settings = cfg.Summary()

	sys := system.New(con)
	sys.ExtraModules = cfg.Modules
	sys.DiskTimeout = *diskWait
	sys.OnProgress, sys.BaseArgs = rec.Progress, args
	rec.OnStick = func(k *keep.Stick) { sys.Keep = k } // found after the disks step
	ctx := context.Background()
	out := flow.RunWith(ctx, cfg, sys, con, rep, rec.Observe)
	cfg = out.Config // the job's, with rescue.job=

	if cfg.Interactive() && out.Err == nil {
		if out.Job != nil { // a job was looked for: say so where it is watched
			rec.Finish(ctx, out, sys.Undos())
		}
		if so.mode != "off" {
			for _, st := range rep.Steps {
				if r, ok := st.Details.(interface{ Summary() string }); ok && st.Name == flow.StepDrivers {
					so.drivers = r.Summary()
				}
			}
			so.stick = rec.Stick
			runScreen(con, so, names, *noShell, false)
		}
		disks, _ := inventory.Sys{Root: "/"}.Disks()
		nics, _ := inventory.Sys{Root: "/"}.NICs()
		system.Banner(con, disks, nics)
		con.Marker("SHELL")
		toShell(con, *noShell, 0)
	}

	// Job marked done, report with the undo files, report.json and
	// console.log on the stick (fsynced), report printed and POSTed: all
	// before rescue.done acts.
	if err := rec.Finish(ctx, out, sys.Undos()); err != nil {
		con.Marker("FAILED %v", err)
		con.Printf("the disk was left as the failed step found it; see the messages above. Starting the shell.")
		toShell(con, *noShell, 1)
	}
	con.Marker("DONE ok")
	if *noShell {
		summary, _ := json.Marshal(map[string]string{"done": string(cfg.Done), "target": out.Target})
		con.Printf("-no-shell: would now do %s", summary)
		os.Exit(0)
	}
	switch cfg.Done {
	case cmdline.DonePoweroff, cmdline.DoneReboot:
		con.Printf("%s in 1 second", cfg.Done)
		time.Sleep(time.Second)
		err = system.PowerOff(cfg.Done == cmdline.DoneReboot, con.Drain)
		con.Marker("FAILED %s: %v", cfg.Done, err)
	case cmdline.DoneBoot:
		con.Printf("booting ESXi from %s (kexec)", out.Target)
		con.Drain()
		err = system.ExecBoot(out.Target)
		con.Marker("FAILED boot: %v", err)
	default:
		toShell(con, false, 0)
	}
	toShell(con, false, 1)
}

// toShell replaces the process with the shell; with noShell (or no shell
// found) it exits with code.
func toShell(con *console.Console, noShell bool, code int) {
	con.Drain()
	if !noShell {
		if err := system.Shell(); err != nil {
			con.Printf("%v", err)
		}
	}
	os.Exit(code)
}

func release() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
