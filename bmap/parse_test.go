package bmap

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// independentHash returns the hash of a checksum type without using the
// package's own table.
func independentHash(t *testing.T, typ string) hash.Hash {
	t.Helper()
	switch typ {
	case "sha256":
		return sha256.New()
	case "sha1":
		return sha1.New()
	case "md5":
		return md5.New()
	}
	t.Fatalf("no hash for %q", typ)
	return nil
}

func TestParseFixtures(t *testing.T) {
	img := readFixture(t, "fixture.img")
	imgSHA := sha256.Sum256(img)
	type rng struct {
		first, last int64
		sum         bool
	}
	all := []rng{{0, 0, true}, {3, 4, true}, {9, 9, true}}
	for _, tc := range []struct {
		file, version, typ string
		ranges             []rng
		imageSHA           bool
	}{
		{"v1.2.bmap", "1.2", "", []rng{{0, 0, false}, {3, 4, false}, {9, 9, false}}, false},
		{"v1.3.bmap", "1.3", "sha1", all, false},
		{"v1.4.bmap", "1.4", "md5", []rng{{0, 0, true}, {3, 4, false}, {9, 9, true}}, false},
		{"v2.0.bmap", "2.0", "sha256", all, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			m, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if m.Version != tc.version || m.ChecksumType != tc.typ || m.ImageSize != 5000 || m.BlockSize != 512 || m.BlocksCount != 10 {
				t.Errorf("got version %q type %q size %d block %d count %d", m.Version, m.ChecksumType, m.ImageSize, m.BlockSize, m.BlocksCount)
			}
			if len(m.Ranges) != len(tc.ranges) {
				t.Fatalf("got %d ranges, want %d", len(m.Ranges), len(tc.ranges))
			}
			for i, want := range tc.ranges {
				r := m.Ranges[i]
				if r.First != want.first || r.Last != want.last || (r.Checksum != nil) != want.sum {
					t.Errorf("range %d: got %d-%d checksum %x, want %d-%d checksum %v", i, r.First, r.Last, r.Checksum, want.first, want.last, want.sum)
				}
				if r.Checksum != nil {
					h := independentHash(t, tc.typ)
					h.Write(img[r.First*512 : min((r.Last+1)*512, 5000)])
					if !bytes.Equal(h.Sum(nil), r.Checksum) {
						t.Errorf("range %d: checksum %x is not the %s of its bytes", i, r.Checksum, tc.typ)
					}
				}
			}
			if m.MappedBlocks() != 4 || m.MappedBytes() != 3*512+392 {
				t.Errorf("mapped %d blocks, %d bytes; want 4, %d", m.MappedBlocks(), m.MappedBytes(), 3*512+392)
			}
			if tc.imageSHA != (m.ImageSHA256 != nil) || (tc.imageSHA && !bytes.Equal(m.ImageSHA256, imgSHA[:])) {
				t.Errorf("ImageSHA256 %x, want present=%v (%x)", m.ImageSHA256, tc.imageSHA, imgSHA)
			}
			if want := tc.typ == "sha256"; m.Complete() != want {
				t.Errorf("Complete() = %v, want %v", m.Complete(), want)
			}
			c := NewChecker(m)
			if err := stream(c, img, 1, 300); err != nil {
				t.Fatal(err)
			}
			if err := c.Finish(int64(len(img))); err != nil {
				t.Fatal(err)
			}
			if c.RangesChecked() != 3 {
				t.Errorf("RangesChecked = %d, want 3", c.RangesChecked())
			}
			// The fixture is valid for bmaptool too.
			out, err := bmaptoolCopy(t, path, filepath.Join("testdata", "fixture.img"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, img) {
				t.Error("bmaptool copy with the fixture did not reproduce the image")
			}
		})
	}
}

// seekRanges returns the mapped blocks of a file from SEEK_DATA/SEEK_HOLE,
// rounded out to blocks and merged like bmaptool does.
func seekRanges(t *testing.T, path string, bs int64) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var out [][2]int64
	for pos := int64(0); pos < fi.Size(); {
		data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		first, last := data/bs, (hole+bs-1)/bs-1
		if n := len(out); n > 0 && out[n-1][1]+1 >= first {
			out[n-1][1] = last
		} else {
			out = append(out, [2]int64{first, last})
		}
		pos = hole
	}
	return out
}

// TestParseBmaptoolCreate parses maps made by the real bmaptool and checks
// them against the file's holes and against the file itself.
func TestParseBmaptoolCreate(t *testing.T) {
	tool := bmaptool(t)
	const size = 3<<20 + 1234 // not a multiple of any block size
	img := makeImage(size, 3,
		extent{0, 512}, extent{100000, 9000}, extent{2 << 20, 4096}, extent{size - 700, 700})
	dir := t.TempDir()
	image := filepath.Join(dir, "image")
	writeSparse(t, image, img)

	for _, tc := range []struct {
		name string
		args []string
		typ  string
	}{
		{"checksums", nil, "sha256"},
		{"no-checksum", []string{"--no-checksum"}, "sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".bmap")
			args := append([]string{"create", "-o", path}, tc.args...)
			if out, err := exec.Command(tool, append(args, image)...).CombinedOutput(); err != nil {
				t.Fatalf("bmaptool create: %v\n%s", err, out)
			}
			m, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if m.ImageSize != size || m.ChecksumType != tc.typ || m.ImageSHA256 != nil || m.Complete() {
				t.Errorf("got size %d type %q ImageSHA256 %x complete %v", m.ImageSize, m.ChecksumType, m.ImageSHA256, m.Complete())
			}
			want := seekRanges(t, image, m.BlockSize)
			if len(want) < 3 {
				t.Fatalf("the file is not sparse here: SEEK_DATA/SEEK_HOLE ranges %v", want)
			}
			var got [][2]int64
			for _, r := range m.Ranges {
				got = append(got, [2]int64{r.First, r.Last})
				if (r.Checksum != nil) != (tc.args == nil) {
					t.Errorf("range %d-%d: checksum %x", r.First, r.Last, r.Checksum)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("ranges %v, SEEK_DATA/SEEK_HOLE says %v", got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("ranges %v, SEEK_DATA/SEEK_HOLE says %v", got, want)
				}
			}
			c := NewChecker(m)
			if err := stream(c, img, 2, 1<<20); err != nil {
				t.Fatal(err)
			}
			if err := c.Finish(size); err != nil {
				t.Fatal(err)
			}
			if c.RangesChecked() != len(m.Ranges) {
				t.Errorf("RangesChecked = %d, want %d", c.RangesChecked(), len(m.Ranges))
			}
			// A changed data byte is caught when the range has a checksum.
			bad := bytes.Clone(img)
			bad[100000+4567] ^= 0x40
			// Without range checksums it cannot be.
			err = stream(NewChecker(m), bad, 2, 1<<20)
			var me *MismatchError
			if tc.args == nil && !errors.As(err, &me) || tc.args != nil && err != nil {
				t.Errorf("a flipped byte: got %v", err)
			}
		})
	}
}

var sumRE = regexp.MustCompile(`<(BmapFileChecksum|BmapFileSHA1)>\s*([0-9a-f]+)\s*</`)

// fixFileSum recomputes a bmap's file checksum the way bmaptool checks it
// (the first occurrence of the checksum text zeroed, the whole file hashed;
// the hash chosen by the text's length), so that an edit is judged on its
// content. Data without a checksum element is returned unchanged.
func fixFileSum(data []byte) []byte {
	m := sumRE.FindSubmatchIndex(data)
	if m == nil {
		return data
	}
	var h hash.Hash
	switch m[5] - m[4] {
	case 32:
		h = md5.New()
	case 40:
		h = sha1.New()
	case 64:
		h = sha256.New()
	case 128:
		h = sha512.New()
	default:
		return data
	}
	old := data[m[4]:m[5]]
	i := bytes.Index(data, old)
	out := bytes.Clone(data)
	copy(out[i:], bytes.Repeat([]byte("0"), len(old)))
	h.Write(out)
	copy(out[i:], hex.EncodeToString(h.Sum(nil)))
	return out
}

func resum(t *testing.T, text string) string {
	t.Helper()
	return string(fixFileSum([]byte(text)))
}

func TestParseErrors(t *testing.T) {
	good := string(readFixture(t, "v2.0.bmap"))
	if _, err := Parse([]byte(resum(t, good))); err != nil {
		t.Fatalf("resum breaks the fixture: %v", err)
	}
	rangeSum := regexp.MustCompile(`chksum="[0-9a-f]+"> 3-4 `).FindString(good)
	for _, tc := range []struct {
		name     string
		old, new string
		resum    bool // recompute the file checksum after the edit
		want     string
	}{
		{"edited range", "> 3-4 <", "> 3-5 <", false, "bmap file checksum mismatch: the file is corrupt or was edited"},
		{"edited image size", "5000", "5001", false, "bmap file checksum mismatch"},
		{"edited file checksum", "<BmapFileChecksum> c", "<BmapFileChecksum> d", false, "bmap file checksum mismatch"},
		{"major version 3", `version="2.0"`, `version="3.0"`, true, "major version 3 is newer than 2"},
		{"version 1.1", `version="2.0"`, `version="1.1"`, true, "not supported"},
		{"version junk", `version="2.0"`, `version="2.x"`, true, "not major.minor"},
		{"no version", ` version="2.0"`, ``, true, "no version attribute"},
		{"absurd image size", "<ImageSize> 5000 ", "<ImageSize> 99999999999999999999999 ", true, "absurdly large"},
		{"huge image size", "<ImageSize> 5000 ", "<ImageSize> 4611686018427387904 ", true, "absurdly large"},
		{"negative image size", "<ImageSize> 5000 ", "<ImageSize> -5000 ", true, "not a non-negative decimal"},
		{"zero image size", "<ImageSize> 5000 ", "<ImageSize> 0 ", true, "ImageSize is 0"},
		{"blocks count", "<BlocksCount> 10 ", "<BlocksCount> 11 ", true, "blocks count 11 does not match"},
		{"block size not power of 2", "<BlockSize> 512 ", "<BlockSize> 500 ", true, "not a power of two"},
		{"block size too small", "<BlockSize> 512 ", "<BlockSize> 256 ", true, "not a power of two"},
		{"mapped count", "<MappedBlocksCount> 4 ", "<MappedBlocksCount> 5 ", true, "MappedBlocksCount is 5 but the ranges hold 4"},
		{"range outside", "> 9 <", "> 10 <", true, "beyond the last block 9"},
		{"range first > last", "> 3-4 <", "> 4-3 <", true, "first block after last block"},
		{"ranges unsorted", "> 0 <", "> 5 <", true, "must be sorted"},
		{"ranges overlap", "> 0 <", "> 0-3 <", true, "not after the previous range"},
		{"range junk", "> 0 <", "> zero <", true, "not a non-negative decimal"},
		{"range negative", "> 0 <", "> -1 <", true, "first block"},
		{"empty range", "> 0 <", "> <", true, "first block"},
		{"short range checksum", rangeSum, `chksum="abcd"> 3-4 `, true, "has 4 hex digits, want 64"},
		{"upper-case range checksum", rangeSum, rangeSum[:8] + strings.ToUpper(rangeSum[8:20]) + rangeSum[20:], true, "not lower-case hex"},
		{"unknown checksum type", "<ChecksumType> sha256 ", "<ChecksumType> crc32 ", true, "unsupported ChecksumType"},
		{"short ImageSHA256", "<ImageSHA256> c", "<ImageSHA256> ", true, "ImageSHA256"},
		{"two ImageSHA256", "<BmapFileChecksum>", "<ImageSHA256/><BmapFileChecksum>", true, "2 ImageSHA256 elements"},
		{"two ImageSize", "<BlockSize>", "<ImageSize>5000</ImageSize><BlockSize>", true, "2 ImageSize elements"},
		{"no BlockMap", "BlockMap>", "BlockMapX>", true, "0 BlockMap elements"},
		{"no file checksum", "BmapFileChecksum>", "BmapFileChecksumX>", false, "0 BmapFileChecksum elements"},
		{"more ranges than blocks", "    </BlockMap>", strings.Repeat("<Range>1</Range>", 11) + "</BlockMap>", true, "14 ranges for 10 blocks"},
		{"content after root", "</bmap>\n", "</bmap>\n<bmap/>", true, "content after the bmap element"},
		{"text after root", "</bmap>\n", "</bmap>\nxyz", true, "text after the bmap element"},
		{"not XML", good, "hello", false, "not an XML block map"},
		{"truncated", "</bmap>\n", "</bma", false, "not an XML block map"},
		{"empty", good, "", false, "not an XML block map"},
		{"wrong root", "<bmap ", "<map ", true, "not an XML block map"},
		{"too large", "</bmap>\n", "</bmap>\n<!--" + strings.Repeat(" ", 64<<20) + "-->", false, "larger than 64 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := strings.ReplaceAll(good, tc.old, tc.new)
			if text == good {
				t.Fatalf("the edit %q -> %q changes nothing", tc.old, tc.new)
			}
			if tc.resum {
				text = resum(t, text)
			}
			m, err := Parse([]byte(text))
			if err == nil {
				t.Fatalf("accepted: %+v", m)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestReadFileErrorsNamePath(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.bmap")
	if err := os.WriteFile(bad, []byte("<bmap version=\"9.0\"></bmap>"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.bmap")} {
		if _, err := ReadFile(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("ReadFile(%s): error %v does not name the path", path, err)
		}
	}
}
