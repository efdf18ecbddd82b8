package esxi

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/internal/gpttest"
)

// sfdiskMBR partitions a sparse image with sfdisk (an independent writer
// of MBR tables, extended chain included) from script.
func sfdiskMBR(t *testing.T, size int64, script string) string {
	t.Helper()
	sf := needTool(t, "sfdisk", "fdisk")
	img := gpttest.Sparse(t, t.TempDir(), "mbr.img", size)
	script = strings.ReplaceAll(script, "IMG", img)
	cmd := exec.Command(sf, "--no-reread", "--no-tell-kernel", "-q", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	return img
}

// The MBR layout of an ESXi host upgraded from ESX(i) 4.x (BRIEF.md).
const esxi4MBR = `label: dos
IMG4 : start=32, size=8160, type=4
IMG1 : start=8192, size=1835008, type=5
IMG5 : start=8224, size=511968, type=6
IMG6 : start=520224, size=511968, type=6
IMG7 : start=1032224, size=225248, type=fc
IMG8 : start=1257504, size=585696, type=6
IMG2 : start=1843200, size=8386560, type=6
IMG3 : start=10229760, type=fb
`

func TestMBR(t *testing.T) {
	img := sfdiskMBR(t, 8<<30, esxi4MBR)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parts, err := ParseMBR(f, 8<<30)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int][2]uint64{}
	for _, p := range parts {
		got[p.Num] = [2]uint64{p.First, p.Last}
	}
	// what sfdisk itself reports
	for _, p := range gpttest.SfdiskJSON(t, img).PartitionTable.Partitions {
		n := gpttest.SfdiskSlot(p.Node)
		if w := [2]uint64{p.Start, p.Start + p.Size - 1}; got[n] != w {
			t.Errorf("partition %d: ParseMBR %v, sfdisk %v", n, got[n], w)
		}
	}
	if len(got) != 8 {
		t.Errorf("ParseMBR found %v", got)
	}
	rep := inspectFile(t, img)
	if rep.MBR == nil || !rep.MBR.ESXi || rep.OK || !strings.Contains(rep.Verdict, "upgraded from ESX(i) 4.x") || !strings.Contains(rep.Verdict, "GPT tables only") {
		t.Errorf("ESXi MBR disk: %+v\n%s", rep.MBR, rep)
	}
	// Not ESXi: one Linux partition.
	img = sfdiskMBR(t, 1<<30, "label: dos\nstart=2048, type=83\n")
	rep = inspectFile(t, img)
	if rep.MBR == nil || rep.MBR.ESXi || !strings.Contains(rep.Verdict, "not a layout ESXi writes") {
		t.Errorf("Linux MBR disk: %+v", rep.MBR)
	}
	// A GPT disk's protective MBR is not an MBR table.
	g := createImage(t, CreateOptions{Version: "6.7", Size: 8 << 30, Seed: 55})
	if rep := inspectFile(t, g); rep.MBR != nil {
		t.Errorf("GPT disk taken for MBR: %+v", rep.MBR)
	}
}

// FuzzParseMBR: sector 0 and a few EBRs of arbitrary bytes never panic or
// loop.
func FuzzParseMBR(f *testing.F) {
	img := make([]byte, 4096)
	img[510], img[511] = 0x55, 0xAA
	copy(img[446:], []byte{0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0})
	copy(img[512+446:], []byte{0, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0})
	img[1022], img[1023] = 0x55, 0xAA
	f.Add(img)
	f.Fuzz(func(t *testing.T, b []byte) {
		parts, _ := ParseMBR(bytes.NewReader(b), int64(len(b)))
		if len(parts) > 4+maxLogical {
			t.Fatalf("%d partitions", len(parts))
		}
		ExplainMBR(parts)
	})
}
