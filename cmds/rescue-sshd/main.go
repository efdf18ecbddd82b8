// Command rescue-sshd is the rescue system's SSH server, started by the
// rescue init when rescue.ssh= names an authorized_keys file or URL: public
// keys only (no passwords ever), the host key the init made fresh this
// boot. An interactive session (ssh -t, a pty) gets the guided screen
// (rescue -menu, as on the console) and, when Shell is chosen there, the
// rescue shell (gosh) on the same pty; ssh host CMD runs the command (ssh
// host gptdiff /dev/sda). No port forwarding.
//
// Usage:
//
//	rescue-sshd -hostkey FILE -authorized-keys FILE [-listen :22] [-shell /bin/sh] [-screen "rescue -menu -printk="|none]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"strings"

	"github.com/esxi-rescue/rescue/rescue/sshd"
)

func main() {
	hostKey := flag.String("hostkey", "", "host key file (OpenSSH PEM, as the rescue init writes it)")
	keysFile := flag.String("authorized-keys", "", "authorized_keys file: the only keys that may log in")
	listen := flag.String("listen", ":22", "address to listen on")
	shell := flag.String("shell", "", "shell for sessions (default: gosh)")
	screen := flag.String("screen", "", "command line of the guided screen an interactive session gets first (default: rescue -menu -printk= when rescue is here); none: the shell at once")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: rescue-sshd -hostkey FILE -authorized-keys FILE [-listen :22] [-shell PATH] [-screen CMDLINE|none]\n\nSSH server of the ESXi rescue system: public keys only, no forwarding.\nssh -t gets the guided screen, then (Shell) the rescue shell; ssh host CMD runs CMD.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("rescue-sshd: ")
	if *hostKey == "" || *keysFile == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	hk, err := sshd.LoadHostKey(*hostKey)
	if err != nil {
		log.Fatal(err)
	}
	data, err := os.ReadFile(*keysFile)
	if err != nil {
		log.Fatal(err)
	}
	keys, err := sshd.ParseAuthorizedKeys(data)
	if err != nil {
		log.Fatal(err)
	}
	sh := *shell
	if sh == "" {
		sh = findShell()
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s, host key %s, %d authorized keys", ln.Addr(), sshd.Fingerprint(hk.PublicKey()), len(keys))
	env := []string{"PATH=/bbin:/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/", "USER=root"}
	scr := strings.Fields(*screen)
	switch {
	case *screen == "none":
		scr = nil
	case *screen == "":
		if p := findTool("rescue"); p != "" {
			scr = []string{p, "-menu", "-printk="}
		}
	}
	err = sshd.Serve(context.Background(), ln, sshd.Config{HostKey: hk, Keys: keys, Shell: []string{sh}, Screen: scr, Env: env, Log: log.Printf})
	log.Fatal(err)
}

func findShell() string {
	for _, n := range []string{"gosh", "sh"} {
		if p := findTool(n); p != "" {
			return p
		}
	}
	return "/bin/sh"
}

// findTool finds a command of the rescue system ("" if none).
func findTool(name string) string {
	for _, p := range []string{"/bbin/" + name, "/bin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}
