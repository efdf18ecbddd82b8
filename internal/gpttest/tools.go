package gpttest

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Sgdisk partitions the existing file at path with sgdisk (512-byte
// sectors, alignment 1), every partition at its slot, with its type,
// name and attribute bits.
func Sgdisk(t testing.TB, path string, parts []Part) {
	t.Helper()
	Need(t, "sgdisk")
	args := []string{"-a", "1"}
	for _, x := range parts {
		args = append(args, "-n", fmt.Sprintf("%d:%d:%d", x.Slot, x.First, x.Last), "-t", fmt.Sprintf("%d:%s", x.Slot, x.Type))
		if x.Name != "" {
			args = append(args, "-c", fmt.Sprintf("%d:%s", x.Slot, x.Name))
		}
		for b := 0; b < 64; b++ {
			if x.Attrs&(1<<b) != 0 {
				args = append(args, "-A", fmt.Sprintf("%d:set:%d", x.Slot, b))
			}
		}
	}
	Run(t, "sgdisk", append(args, path)...)
}

// SgdiskImage makes a sparse image of size bytes in dir partitioned by
// Sgdisk. sgdisk sleeps about a second after writing, so every distinct
// image is made once per test binary run; its GPT regions are kept in
// memory and written into a fresh sparse file for each caller (the
// images of one size and layout share their GUIDs).
func SgdiskImage(t testing.TB, dir string, size int64, parts []Part) string {
	t.Helper()
	regions := sgRegions(t, size, parts)
	p := Sparse(t, dir, fmt.Sprintf("sg%d.img", size), size)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, r := range regions {
		WriteAt(t, f, r.b, r.off)
	}
	return p
}

// sgRegions returns the cached GPT regions of the sgdisk-made image of
// size and parts, making it first if needed. The lock is released by a
// defer, so a t.Fatal inside (runtime.Goexit) does not leave it held and
// hang every other test that wants an image.
func sgRegions(t testing.TB, size int64, parts []Part) []region {
	t.Helper()
	key := fmt.Sprint(size, parts)
	sgCache.Lock()
	defer sgCache.Unlock()
	if regions, ok := sgCache.m[key]; ok {
		return regions
	}
	src := Sparse(t, t.TempDir(), "sgdisk.img", size)
	Sgdisk(t, src, parts)
	var regions []region
	for _, r := range Regions(size, 512) {
		regions = append(regions, region{r[0], ReadAt(t, src, r[0], int(r[1]))})
	}
	sgCache.m[key] = regions
	return regions
}

type region struct {
	off int64
	b   []byte
}

var sgCache = struct {
	sync.Mutex
	m map[string][]region
}{m: map[string][]region{}}

// SgdiskVerify runs sgdisk -v on a 512-byte image and fails the test
// (without stopping it) unless sgdisk reports no problems.
func SgdiskVerify(t testing.TB, path string) {
	t.Helper()
	out := Run(t, "sgdisk", "-v", path)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", path, out)
	}
}

// SgdiskCheck runs sgdisk -v on path and returns its output and whether
// sgdisk reported no problems. Unlike SgdiskVerify it fails nothing, not
// even when sgdisk exits non-zero, for tests that expect problems.
func SgdiskCheck(t testing.TB, path string) (out string, clean bool) {
	t.Helper()
	b, _ := command("sgdisk", "-v", path).CombinedOutput()
	return string(b), strings.Contains(string(b), "No problems found")
}

// SgdiskSlots returns "slot:first-last" for each partition sgdisk -p lists.
func SgdiskSlots(t testing.TB, path string) []string {
	t.Helper()
	out := Run(t, "sgdisk", "-p", path)
	var s []string
	in := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "Number" {
			in = true
			continue
		}
		if in && len(f) >= 3 {
			s = append(s, f[0]+":"+f[1]+"-"+f[2])
		}
	}
	return s
}

// SgdiskPart is one row of `sgdisk -p`.
type SgdiskPart struct {
	Num         int
	First, Last uint64
	Code        string
	Name        string
}

// SgdiskList parses `sgdisk -p`.
func SgdiskList(t testing.TB, path string) []SgdiskPart {
	t.Helper()
	out := Run(t, "sgdisk", "-p", path)
	var ps []SgdiskPart
	in := false
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Number") {
			in = true
			continue
		}
		f := strings.Fields(l)
		if !in || len(f) < 6 {
			continue
		}
		var p SgdiskPart
		p.Num, _ = strconv.Atoi(f[0])
		p.First, _ = strconv.ParseUint(f[1], 10, 64)
		p.Last, _ = strconv.ParseUint(f[2], 10, 64)
		p.Code = f[5]
		if len(f) > 6 {
			p.Name = strings.Join(f[6:], " ")
		}
		ps = append(ps, p)
	}
	return ps
}

// SgdiskInfo parses `sgdisk -i N`.
func SgdiskInfo(t testing.TB, path string, n int) map[string]string {
	t.Helper()
	out := Run(t, "sgdisk", "-i", strconv.Itoa(n), path)
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// SfdiskDump is what `sfdisk --json` prints.
type SfdiskDump struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   uint64 `json:"firstlba"`
		LastLBA    uint64 `json:"lastlba"`
		SectorSize int    `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			Type  string `json:"type"`
			UUID  string `json:"uuid"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// SfdiskJSON runs `sfdisk --json` on path.
func SfdiskJSON(t testing.TB, path string) SfdiskDump {
	t.Helper()
	Need(t, "sfdisk")
	out, err := command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", path, err)
	}
	var d SfdiskDump
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("sfdisk output: %v\n%s", err, out)
	}
	return d
}

// SfdiskSlot returns the entry number from an sfdisk node name ("x.img12").
func SfdiskSlot(node string) int {
	i := len(node)
	for i > 0 && node[i-1] >= '0' && node[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(node[i:])
	return n
}

// FdiskPart is one row of FdiskList.
type FdiskPart struct {
	Slot        int
	First, Last uint64
	Type, UUID  string
}

// FdiskList parses `fdisk -b SS -l` of an image (fdisk, unlike sfdisk,
// takes a sector size for files).
func FdiskList(t testing.TB, path string, ss int) []FdiskPart {
	t.Helper()
	Need(t, "fdisk")
	out, err := command("fdisk", "-b", strconv.Itoa(ss), "-l", "-o", "Device,Start,End,Type-UUID,UUID", path).Output()
	if err != nil {
		t.Fatalf("fdisk -l %s: %v\n%s", path, err, out)
	}
	var ps []FdiskPart
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 5 || !strings.HasPrefix(f[0], path) {
			continue
		}
		var p FdiskPart
		p.Slot = SfdiskSlot(f[0])
		p.First, _ = strconv.ParseUint(f[1], 10, 64)
		p.Last, _ = strconv.ParseUint(f[2], 10, 64)
		p.Type, p.UUID = f[3], f[4]
		ps = append(ps, p)
	}
	return ps
}
