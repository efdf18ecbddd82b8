package imaging

import (
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// hashWriter is a buffered writer that writes to w and hashes into h what
// it is given, each full buffer written and hashed by two goroutines of
// their own: the encoder that writes into it waits for neither the write
// nor the hash (a backup's file SHA-256 used to run inside the zstd
// encoder's output stage, in series with the write). Memory: nbuf buffers
// of size bytes. The first write error is returned by the next Write, and
// by Close, which flushes the rest and waits for both goroutines; h holds
// the sum of everything written once Close returned.
type hashWriter struct {
	free   chan *hwBuf
	toW    chan *hwBuf
	toH    chan *hwBuf
	cur    *hwBuf
	done   sync.WaitGroup
	mu     sync.Mutex
	err    error // the first write error
	closed bool
}

// hwBuf is one buffer of a hashWriter, with the number of its two
// goroutines not done with it.
type hwBuf struct {
	b    []byte
	refs atomic.Int32
}

func newHashWriter(w io.Writer, h hash.Hash, nbuf, size int) *hashWriter {
	hw := &hashWriter{
		free: make(chan *hwBuf, nbuf),
		toW:  make(chan *hwBuf, nbuf),
		toH:  make(chan *hwBuf, nbuf),
	}
	for range nbuf {
		hw.free <- &hwBuf{b: make([]byte, 0, size)}
	}
	// The second goroutine done with a buffer puts it back.
	release := func(b *hwBuf) {
		if b.refs.Add(-1) == 0 {
			b.b = b.b[:0]
			hw.free <- b
		}
	}
	hw.done.Add(2)
	go func() {
		defer hw.done.Done()
		for b := range hw.toW {
			if hw.error() == nil {
				if _, err := w.Write(b.b); err != nil {
					hw.setError(err)
				}
			}
			release(b)
		}
	}()
	go func() {
		defer hw.done.Done()
		for b := range hw.toH {
			h.Write(b.b)
			release(b)
		}
	}()
	return hw
}

func (hw *hashWriter) error() error {
	hw.mu.Lock()
	defer hw.mu.Unlock()
	return hw.err
}

func (hw *hashWriter) setError(err error) {
	hw.mu.Lock()
	if hw.err == nil {
		hw.err = err
	}
	hw.mu.Unlock()
}

// errHashWriterDone is what a hashWriter's Write returns after Close or
// abort.
var errHashWriterDone = errors.New("write after the end of the backup file")

// abort makes every later Write fail and drops what is not written yet
// (a failed backup: the encoder's last writes go nowhere).
func (hw *hashWriter) abort() { hw.setError(errHashWriterDone) }

func (hw *hashWriter) Write(p []byte) (int, error) {
	if hw.closed {
		return 0, errHashWriterDone
	}
	if err := hw.error(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if hw.cur == nil {
			hw.cur = <-hw.free
		}
		b := hw.cur.b
		k := copy(b[len(b):cap(b)], p)
		hw.cur.b = b[:len(b)+k]
		p = p[k:]
		if len(hw.cur.b) == cap(hw.cur.b) {
			hw.send()
		}
	}
	return n, nil
}

// send hands the current buffer to both goroutines.
func (hw *hashWriter) send() {
	hw.cur.refs.Store(2)
	hw.toW <- hw.cur
	hw.toH <- hw.cur
	hw.cur = nil
}

// Close writes and hashes what is left and waits for both goroutines.
func (hw *hashWriter) Close() error {
	if hw.closed {
		return hw.error()
	}
	hw.closed = true
	if hw.cur != nil && len(hw.cur.b) > 0 {
		hw.send()
	}
	close(hw.toW)
	close(hw.toH)
	hw.done.Wait()
	return hw.error()
}
