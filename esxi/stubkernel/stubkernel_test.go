package stubkernel

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKernelMatchesSource reassembles stub.S and insists kernel.go holds
// exactly those bytes, so the committed image cannot drift from its source.
func TestKernelMatchesSource(t *testing.T) {
	for _, tool := range []string{"as", "ld"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPING: %s (binutils) not installed, cannot check kernel.go against stub.S", tool)
		}
	}
	got, err := Assemble("stub.S")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Kernel()) {
		t.Fatalf("kernel.go is stale: stub.S assembles to %d bytes that differ from the %d committed ones; run go generate ./esxi/stubkernel", len(got), len(image))
	}
}

// TestKernelIsMultibootELF checks what loaders require: an ELF32 i386
// executable whose entry lies in its loaded segment, and a multiboot v1
// header in the first 8 KiB, 4-byte aligned, checksum right, and no flag
// u-root's multiboot package rejects (0xFFF8) or the a.out kludge (bit 16).
func TestKernelIsMultibootELF(t *testing.T) {
	k := Kernel()
	f, err := elf.NewFile(bytes.NewReader(k))
	if err != nil {
		t.Fatalf("debug/elf: %v", err)
	}
	if f.Class != elf.ELFCLASS32 || f.Machine != elf.EM_386 || f.Type != elf.ET_EXEC {
		t.Fatalf("class %v machine %v type %v, want ELFCLASS32 EM_386 ET_EXEC", f.Class, f.Machine, f.Type)
	}
	if len(f.Progs) != 1 || f.Progs[0].Type != elf.PT_LOAD {
		t.Fatalf("want one PT_LOAD program header, got %v", f.Progs)
	}
	p := f.Progs[0]
	if f.Entry < p.Vaddr || f.Entry >= p.Vaddr+p.Filesz || p.Filesz != uint64(len(k)) || p.Memsz <= p.Filesz {
		t.Fatalf("entry %#x outside segment %#x+%#x (memsz %#x, file %d bytes)", f.Entry, p.Vaddr, p.Filesz, p.Memsz, len(k))
	}
	found := false
	for off := 0; off+12 <= len(k) && off < 8192; off += 4 {
		magic := binary.LittleEndian.Uint32(k[off:])
		flags := binary.LittleEndian.Uint32(k[off+4:])
		sum := binary.LittleEndian.Uint32(k[off+8:])
		if magic == 0x1BADB002 && magic+flags+sum == 0 {
			if flags&0xFFF8 != 0 || flags&0x10000 != 0 {
				t.Fatalf("multiboot flags %#x: unsupported by u-root or a.out kludge", flags)
			}
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no valid multiboot v1 header in the first 8 KiB")
	}
}

// TestKernelBootsInQEMU boots the kernel with QEMU's multiboot loader, the
// way ESXi's loader would: command line with bootUUID=, two modules. It must
// print the marker line with the UUID and the module count and power off.
func TestKernelBootsInQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("SKIPPING QEMU BOOT OF THE STUB KERNEL: qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "b.b00")
	mods := []string{filepath.Join(dir, "s.v00"), filepath.Join(dir, "state.tgz")}
	if err := os.WriteFile(kernel, Kernel(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if err := os.WriteFile(m, []byte("module "+m), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, machine := range []string{"pc", "q35"} {
		t.Run(machine, func(t *testing.T) {
			const uuid = "5f0c1e2d3c4b5a69788796a5b4c3d2e1"
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, qemu, "-M", machine, "-m", "128", "-kernel", kernel,
				"-append", "no-auto-partition bootUUID="+uuid+" foo=bar",
				"-initrd", strings.Join(mods, ","),
				"-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot", "-nic", "none")
			out, err := cmd.Output()
			if ctx.Err() != nil {
				t.Fatalf("QEMU did not power off within 90 s; output so far: %q", out)
			}
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			if err != nil {
				t.Fatalf("QEMU exited with %v; output %q", err, out)
			}
			want := Marker + uuid + " modules=2\r\n"
			if !strings.Contains(string(out), want) {
				t.Fatalf("serial output %q does not contain %q", out, want)
			}
		})
	}
}
