package target

import (
	"strings"
	"testing"

	"github.com/esxi-rescue/rescue/rescue/inventory"
)

const gib = int64(1) << 30

func disk(name string, size int64) inventory.Disk {
	return inventory.Disk{Name: name, Path: "/dev/" + name, Size: size, SectorSize: 512}
}

func TestSelect(t *testing.T) {
	stick := Facts{Disk: disk("sdz", 8*gib), RescueMedium: true, HasGPT: true}
	esxiA := Facts{Disk: disk("sda", 40*gib), HasGPT: true, ESXi: "5.x"}
	esxiB := Facts{Disk: disk("sdb", 40*gib), HasGPT: true, ESXi: "6.x"}
	other := Facts{Disk: disk("sdc", 100*gib), HasGPT: true, ESXiWhy: "esxi: the partition table is empty"}
	blankBig := Facts{Disk: disk("sdd", 60*gib), Blank: true}
	blankBig2 := Facts{Disk: disk("sde", 60*gib), Blank: true}
	blankSmall := Facts{Disk: disk("sdf", 10*gib), Blank: true}
	imgMatch := Facts{Disk: disk("sdg", 50*gib), HasGPT: true, RefMatch: true, ESXi: "5.x"}
	mounted := imgMatch
	mounted.Disk.Mounted = []string{"/mnt"}
	unreadable := Facts{Disk: disk("sdh", 40*gib), ReadErr: "input/output error"}
	mbrData := Facts{Disk: disk("sdi", 60*gib)}
	esxiStickLike := esxiA
	esxiStickLike.RescueMedium = true

	restore := Need{Purpose: ForRestore, MinSize: 30 * gib, HaveRef: true, Writes: true}
	fixESXi := Need{Purpose: ForFix, Writes: true}
	fixRef := Need{Purpose: ForFix, HaveRef: true, Writes: true}
	verify := Need{Purpose: ForFix}
	backup := Need{Purpose: ForBackup}

	for _, tc := range []struct {
		name    string
		facts   []Facts
		need    Need
		want    string
		wantErr string
	}{
		{name: "fix: one ESXi disk besides the stick", facts: []Facts{stick, esxiA, other}, need: fixESXi, want: "sda"},
		{name: "fix: two ESXi disks", facts: []Facts{esxiA, esxiB}, need: fixESXi, wantErr: "2 disks qualify (/dev/sda 40.0 GiB; /dev/sdb 40.0 GiB)"},
		{name: "fix: no ESXi disk", facts: []Facts{stick, other, blankBig}, need: fixESXi,
			wantErr: "no disk holds an ESXi layout: /dev/sdz 8.0 GiB: the rescue system's own boot medium; /dev/sdc 100.0 GiB: not an ESXi layout (esxi: the partition table is empty); /dev/sdd 60.0 GiB: no GPT"},
		{name: "fix: the stick is never chosen even if it looks like ESXi", facts: []Facts{esxiStickLike}, need: fixESXi, wantErr: "own boot medium"},
		{name: "fix with reference", facts: []Facts{esxiA, imgMatch}, need: fixRef, want: "sdg"},
		{name: "fix with reference: none", facts: []Facts{esxiA}, need: fixRef, wantErr: "not the reference's"},
		{name: "fix refuses mounted", facts: []Facts{mounted}, need: fixRef, wantErr: "mounted on /mnt"},
		{name: "verify accepts mounted", facts: []Facts{mounted}, need: Need{Purpose: ForFix, HaveRef: true}, want: "sdg"},
		{name: "verify: unreadable disk explained", facts: []Facts{unreadable, esxiA}, need: verify, want: "sda"},
		{name: "restore: the disk with the image's table wins over blank ones", facts: []Facts{blankBig, imgMatch, stick}, need: restore, want: "sdg"},
		{name: "restore: one blank disk big enough", facts: []Facts{stick, blankBig, blankSmall, esxiA}, need: restore, want: "sdd"},
		{name: "restore: two blank disks", facts: []Facts{blankBig, blankBig2}, need: restore, wantErr: "2 blank disks are big enough"},
		{name: "restore: only too small or foreign", facts: []Facts{blankSmall, esxiA, mbrData}, need: restore,
			wantErr: "/dev/sdf 10.0 GiB: too small (10.0 GiB, the image needs 30.0 GiB); /dev/sda 40.0 GiB: holds a different partition table (not the image's partitions); /dev/sdi 60.0 GiB: holds data but no GPT"},
		{name: "restore: mounted disk refused", facts: []Facts{mounted}, need: restore, wantErr: "mounted on /mnt"},
		{name: "no disks", facts: nil, need: fixESXi, wantErr: "no disks found"},
		{name: "backup: the one ESXi disk, never the stick", facts: []Facts{esxiStickLike, esxiB, other, blankBig}, need: backup, want: "sdb"},
		{name: "backup: two ESXi disks", facts: []Facts{esxiA, esxiB}, need: backup, wantErr: "rescue.source=auto: 2 disks qualify (/dev/sda 40.0 GiB; /dev/sdb 40.0 GiB); name one with rescue.source=/dev/..."},
		{name: "backup: mounted refused", facts: []Facts{mounted}, need: backup, wantErr: "rescue.source=auto: no disk holds an ESXi layout: /dev/sdg 50.0 GiB mounted on /mnt: mounted on /mnt (its image would not be consistent)"},
		{name: "backup: blank and foreign disks are not backed up", facts: []Facts{blankBig, other, unreadable}, need: backup, wantErr: "/dev/sdd 60.0 GiB: no GPT; /dev/sdc 100.0 GiB: not an ESXi layout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why, err := Select(tc.facts, tc.need)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					name := ""
					if got != nil {
						name = got.Disk.Name
					}
					t.Fatalf("Select = %s, %v; want error containing %q", name, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			if got.Disk.Name != tc.want || !strings.Contains(why, "/dev/"+tc.want) {
				t.Errorf("Select = %s (%s), want %s", got.Disk.Name, why, tc.want)
			}
		})
	}
}

// TestNamed: a disk named on the command line is refused for what it
// cannot serve, and an unknown name lists the disks found.
func TestNamed(t *testing.T) {
	stick := Facts{Disk: disk("sdz", 8*gib), RescueMedium: true, HasGPT: true}
	esxiA := Facts{Disk: disk("sda", 40*gib), HasGPT: true, ESXi: "5.x"}
	mounted := esxiA
	mounted.Disk = disk("sdm", 40*gib)
	mounted.Disk.Mounted = []string{"/mnt", "/boot"}
	ro := esxiA
	ro.Disk = disk("sdr", 40*gib)
	ro.Disk.ReadOnly = true
	unreadable := Facts{Disk: disk("sdh", 40*gib), ReadErr: "input/output error"}
	facts := []Facts{stick, esxiA, mounted, ro, unreadable}

	restore := Need{Purpose: ForRestore, MinSize: 50 * gib, HaveRef: true, Writes: true}
	fix := Need{Purpose: ForFix, Writes: true}
	verify := Need{Purpose: ForFix}
	backup := Need{Purpose: ForBackup}
	for _, tc := range []struct {
		path    string
		need    Need
		wantErr string // "": accepted
	}{
		{"/dev/sdz", verify, "/dev/sdz is the rescue system's own boot medium"},
		{"/dev/sdz", backup, "/dev/sdz is the rescue system's own boot medium"},
		{"/dev/sda", fix, ""},
		{"/dev/sda", backup, ""},
		{"/dev/sda", restore, "/dev/sda is too small (40.0 GiB, the image needs 50.0 GiB)"},
		{"/dev/sdm", fix, "/dev/sdm is mounted on /mnt,/boot"},
		{"/dev/sdm", verify, ""},
		{"/dev/sdm", backup, "/dev/sdm is mounted on /mnt,/boot (its image would not be consistent)"},
		{"/dev/sdr", fix, "/dev/sdr is read-only"},
		{"/dev/sdr", backup, ""},
		{"/dev/sdh", verify, ""},
		{"/dev/sdh", backup, "/dev/sdh cannot be read: input/output error"},
		{"/dev/sdq", backup, "/dev/sdq is not among the disks found (/dev/sdz, /dev/sda, /dev/sdm, /dev/sdr, /dev/sdh)"},
	} {
		f, err := Named(facts, tc.path, tc.need)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("Named(%s, %s): %v", tc.path, tc.need.Purpose, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
			t.Errorf("Named(%s, %s) = %v, want %q", tc.path, tc.need.Purpose, err, tc.wantErr)
		case tc.path == "/dev/sdq" && f != nil, tc.path != "/dev/sdq" && (f == nil || f.Disk.Path != tc.path):
			t.Errorf("Named(%s, %s) gave the facts of %v", tc.path, tc.need.Purpose, f)
		}
	}
}
