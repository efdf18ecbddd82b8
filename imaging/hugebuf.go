package imaging

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugeBufs returns n buffers of size bytes (a multiple of 4096), cut
// from one allocation that starts on a 2 MiB boundary and is asked to be
// backed by transparent huge pages (madvise: a hint). O_DIRECT reads pin
// each page, and hashing and comparing walk them: on 4 KiB pages, page
// pinning and TLB misses cost a quarter of a delta restore's CPU time
// (bench/delta.sh, 256 MiB: 0.35 s of CPU instead of 0.47 s) and a tenth
// of -verify's read-back of zeros. The memory
// is ordinary Go memory, freed by the GC; the slack before the aligned
// start (under 2 MiB for all n) is never used.
func hugeBufs(n, size int) [][]byte {
	const huge = 2 << 20
	b := make([]byte, n*size+huge)
	a := int(uintptr(unsafe.Pointer(&b[0])) & (huge - 1))
	if a != 0 {
		a = huge - a
	}
	all := b[a : a+n*size]
	if k := len(all) &^ (huge - 1); k > 0 {
		_ = unix.Madvise(all[:k], unix.MADV_HUGEPAGE)
	}
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	return bufs
}
