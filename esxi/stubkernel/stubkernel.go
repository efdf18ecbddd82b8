// Package stubkernel holds the stand-in ESXi kernel (b.b00) that esximg puts
// on boot banks: a few hundred bytes of multiboot (v1) ELF32 that prints
//
//	ESXI-STUB: booted from bank <uuid> modules=<n>
//
// on COM1 (<uuid> is the bootUUID= value of its command line, which the ESXi
// loader and u-root's esxiboot append) and then powers QEMU off. The source is
// stub.S; kernel.go holds its bytes, regenerated with `go generate` (needs
// binutils), so building and testing need no assembler.
package stubkernel

//go:generate go run gen.go

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Marker is the start of the line the kernel prints; the bank UUID follows.
const Marker = "ESXI-STUB: booted from bank "

// Kernel returns a copy of the kernel image (an ELF32 file).
func Kernel() []byte { return append([]byte(nil), image...) }

// Assemble builds the kernel from the assembly source at path with GNU as and
// ld (binutils), the way kernel.go was generated.
func Assemble(path string) ([]byte, error) {
	dir, err := os.MkdirTemp("", "stubkernel")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	obj, bin := filepath.Join(dir, "stub.o"), filepath.Join(dir, "stub.bin")
	for _, args := range [][]string{
		{"as", "--32", "-o", obj, path},
		{"ld", "-m", "elf_i386", "-Ttext=0x100000", "--oformat", "binary", "-o", bin, obj},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("stubkernel: %s: %w\n%s", args[0], err, out)
		}
	}
	return os.ReadFile(bin)
}
