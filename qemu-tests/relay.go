package qemutests

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
)

// QEMU's guestfwd to a socket chardev carries one connection for the whole
// life of the VM; a client that reconnects (an HTTP download resuming after a
// drop) needs the "cmd:" form instead, which spawns a program per guest
// connection with its stdin/stdout joined to that connection. The program is
// this very binary, started with relayFlag: init() below turns it into a
// relay to a loopback address before anything else runs.

const relayFlag = "-qemu-tests-relay"

func init() {
	if len(os.Args) == 3 && os.Args[1] == relayFlag {
		os.Exit(relay(os.Args[2]))
	}
}

// relay copies stdin to a TCP connection to addr and the connection back to
// stdout, until either side closes. QEMU has pointed stdin, stdout and stderr
// at the guest connection, so it never prints anything.
func relay(addr string) int {
	if !isLoopback(addr) {
		return 2
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 1
	}
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(c, os.Stdin)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(os.Stdout, c)
		done <- struct{}{}
	}()
	// The server closing (or dropping) the connection ends the relay, which
	// makes QEMU close the guest's side too.
	<-done
	return 0
}

// relayCommand returns the guestfwd "cmd:" program relaying to host, which
// must be a loopback address: the tests never reach anything else.
func relayCommand(host string) (string, error) {
	if !isLoopback(host) {
		return "", fmt.Errorf("qemu: forward target %q is not a loopback address", host)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("qemu: relay: %w", err)
	}
	return strconv.Quote(exe) + " " + relayFlag + " " + host, nil
}

func isLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}
