package esxi

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// BankMagic is what ESXi writes at the start of the second sector of a boot
// bank partition (byte 512; on 4Kn disks byte 4096), followed by the bank's
// 16-byte UUID. ESXi's loader and u-root's esxiboot read the UUID from there
// and pass it to the kernel as bootUUID=<32 hex digits>.
const BankMagic = "VMWARE FAT16    "

// Builds are the build= values our images carry, one per version.
var Builds = map[Version]string{
	"5.0": "5.0.0-1311175",
	"5.5": "5.5.0-1331820",
	"6.0": "6.0.0-2494585",
	"6.5": "6.5.0-4564106",
	"6.7": "6.7.0-8169922",
	"7.0": "7.0.0-15843807",
	"8.0": "8.0.0-20513097",
}

// BankModules are the module files written to every boot bank besides the
// kernel b.b00, in boot.cfg order.
var BankModules = []string{"s.v00", "misc_cni.v00", "state.tgz"}

// BootCfg is the part of a boot bank's boot.cfg that the ESXi boot loader
// looks at (see esx-boot safeboot/bootbank.c and u-root pkg/boot/esxi).
type BootCfg struct {
	BootState int    // bootstate=: 0 valid, 1 upgrading, 2 dirty, 3 invalid (missing = 3)
	Title     string // title=
	Kernel    string // kernel=
	KernelOpt string // kernelopt=
	Modules   []string
	Build     string // build=
	Updated   int    // updated=
}

// Bytes renders the boot.cfg as ESXi writes it.
func (c BootCfg) Bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "bootstate=%d\n", c.BootState)
	fmt.Fprintf(&b, "title=%s\n", c.Title)
	fmt.Fprintf(&b, "kernel=%s\n", c.Kernel)
	fmt.Fprintf(&b, "kernelopt=%s\n", c.KernelOpt)
	fmt.Fprintf(&b, "modules=%s\n", strings.Join(c.Modules, " --- "))
	fmt.Fprintf(&b, "build=%s\n", c.Build)
	fmt.Fprintf(&b, "updated=%d\n", c.Updated)
	return b.Bytes()
}

// ParseBootCfg parses a boot.cfg the way esx-boot does: key=value lines, #
// comments, a missing bootstate means invalid (3), an empty one valid (0).
func ParseBootCfg(data []byte) (BootCfg, error) {
	c := BootCfg{BootState: 3, Title: "VMware ESXi"}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return c, fmt.Errorf("boot.cfg: bad line %q", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "bootstate":
			c.BootState = 0
			if v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return c, fmt.Errorf("boot.cfg: bootstate %q: %w", v, err)
				}
				c.BootState = n
				if n < 0 || n > 3 {
					c.BootState = 3
				}
			}
		case "updated":
			c.Updated = 0
			if v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return c, fmt.Errorf("boot.cfg: updated %q: %w", v, err)
				}
				c.Updated = n
			}
		case "title":
			c.Title = v
		case "kernel":
			c.Kernel = v
		case "kernelopt":
			c.KernelOpt = v
		case "build":
			c.Build = v
		case "modules":
			c.Modules = nil
			for _, m := range strings.Split(v, "---") {
				if m = strings.TrimSpace(m); m != "" {
					c.Modules = append(c.Modules, m)
				}
			}
		}
	}
	return c, sc.Err()
}

// bankSector returns the 16-byte magic followed by the 16-byte UUID.
func bankSector(uuid []byte) []byte {
	return append([]byte(BankMagic), uuid...)
}

// ParseBankUUID checks the magic in b (the 32 bytes at the bank's second
// sector) and returns the UUID as 32 lower-case hex digits, the form of
// bootUUID= on the kernel command line.
func ParseBankUUID(b []byte) (string, bool) {
	if len(b) < 32 || string(b[:16]) != BankMagic {
		return "", false
	}
	return hex.EncodeToString(b[16:32]), true
}
