package gpt_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/esxi-rescue/rescue/gpt"
)

// pfUndoSample is a one-record undo file body.
func pfUndoSample() *gpt.Undo {
	old := bytes.Repeat([]byte{0xAB}, 512)
	nw := bytes.Repeat([]byte{0xCD}, 512)
	sum := sha256.Sum256(old)
	return &gpt.Undo{Created: time.Unix(0, 0).UTC(), Device: "disk.img", DiskSize: 1 << 20, SectorSize: 512,
		Records: []gpt.UndoRecord{{Region: "primary header", LBA: 1, Offset: 512,
			Old: hex.EncodeToString(old), New: hex.EncodeToString(nw), OldSHA256: hex.EncodeToString(sum[:])}}}
}

// TestUndoParse: MarshalUndo's output parses back, and damage is caught.
func TestUndoParse(t *testing.T) {
	data, err := gpt.MarshalUndo(pfUndoSample())
	if err != nil {
		t.Fatal(err)
	}
	u, err := gpt.ParseUndo(bytes.NewReader(data))
	if err != nil || len(u.Records) != 1 || u.Records[0].LBA != 1 {
		t.Fatalf("round trip: %v %+v", err, u)
	}
	cases := map[string]func(*gpt.Undo){
		"record checksum": func(u *gpt.Undo) { u.Records[0].OldSHA256 = strings.Repeat("0", 64) },
		"short sector":    func(u *gpt.Undo) { u.Records[0].Old = u.Records[0].Old[:100] },
		"past the end":    func(u *gpt.Undo) { u.Records[0].LBA, u.Records[0].Offset = 1<<20, 512<<20 },
		"offset/LBA":      func(u *gpt.Undo) { u.Records[0].Offset = 1024 },
		"sector size":     func(u *gpt.Undo) { u.SectorSize = 1000 },
	}
	for name, edit := range cases {
		u := pfUndoSample()
		edit(u)
		data, _ := gpt.MarshalUndo(u)
		if _, err := gpt.ParseUndo(bytes.NewReader(data)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The file's own checksum: change a byte of the body.
	bad := bytes.Replace(data, []byte(`"disk.img"`), []byte(`"disk.imh"`), 1)
	if _, err := gpt.ParseUndo(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("edited body: %v", err)
	}
}

// FuzzParseUndo: ParseUndo never panics and accepts only what it can replay.
func FuzzParseUndo(f *testing.F) {
	if data, err := gpt.MarshalUndo(pfUndoSample()); err == nil {
		f.Add(data)
	}
	f.Add([]byte(`{"format":"gptfix-undo/1","sha256":"","body":{}}`))
	f.Add([]byte(`{"format":"gptfix-undo/1","sha256":"00","body":{"sector_size":512,"records":[{"lba":1}]}}`))
	f.Add([]byte("not json"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := gpt.ParseUndo(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, r := range u.Records {
			if len(r.Old) != 2*u.SectorSize || len(r.New) != 2*u.SectorSize || r.Offset < 0 || r.Offset+int64(u.SectorSize) > u.DiskSize {
				t.Fatalf("accepted a record that cannot be replayed: %+v", r)
			}
		}
	})
}
