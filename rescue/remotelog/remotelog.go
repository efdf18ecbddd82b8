// Package remotelog sends the rescue console's lines to a remote syslog
// server (rescue.syslog=[udp://|tcp://]HOST[:PORT]) as RFC 5424 messages:
// one datagram per message over UDP (RFC 5426), octet-counted framing over
// TCP (RFC 6587 3.4.1). The messages are built and validated by
// github.com/leodido/go-syslog's rfc5424 builder (Go's log/syslog writes
// the older RFC 3164 format).
//
// Sending never blocks the console: lines go through a bounded queue to a
// sender goroutine that (re)connects as needed; lines written before the
// network is up wait in the queue, and when it is full the newest are
// dropped and counted.
package remotelog

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/esxi-rescue/rescue/rescue/cmdline"
	"github.com/leodido/go-syslog/v4/rfc5424"
)

// AppName is the RFC 5424 APP-NAME of every message.
const AppName = "esxi-rescue"

// SDID is the structured-data element carrying the run id (32473 is the
// private enterprise number RFC 5612 reserves for documentation and
// examples; a site filters on APP-NAME).
const SDID = "rescue@32473"

// Queue is how many lines wait for the network at most.
const Queue = 4096

// Facility user (1) and the severities used.
const (
	facility    = 1
	sevErr      = 3
	sevWarning  = 4
	sevInfo     = 6
	dialTimeout = 5 * time.Second
)

// Sender is an io.Writer of console text that sends each line.
type Sender struct {
	network, addr string
	hostname, run string

	mu      sync.Mutex
	partial []byte
	queue   chan string
	closed  bool
	dropped int
	sent    int
	lastErr string
	done    chan struct{}
}

// Stats says what a Sender did.
type Stats struct {
	Server  string `json:"server"`
	Sent    int    `json:"sent"`
	Dropped int    `json:"dropped"` // queue full, or unsendable at the end
	Error   string `json:"last_error,omitempty"`
}

// New starts a Sender for spec (cmdline.SyslogAddr syntax); hostname and
// run go into every message (HOSTNAME, and the run id as structured data).
func New(spec, hostname, run string) (*Sender, error) {
	network, addr, err := cmdline.SyslogAddr(spec)
	if err != nil {
		return nil, err
	}
	s := &Sender{network: network, addr: addr, hostname: hostname, run: run,
		queue: make(chan string, Queue), done: make(chan struct{})}
	go s.loop()
	return s, nil
}

// Write splits p into lines and queues each (a partial last line waits for
// its end). It never blocks and never fails.
func (s *Sender) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return len(p), nil
	}
	data := append(s.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(data[:i]), "\r")
		data = data[i+1:]
		if strings.TrimSpace(line) == "" {
			continue
		}
		select {
		case s.queue <- line:
		default:
			s.dropped++
		}
	}
	s.partial = append([]byte(nil), data...)
	return len(p), nil
}

// Format builds the RFC 5424 message for one console line at t.
func (s *Sender) Format(line string, t time.Time) (string, error) {
	sev := uint8(sevInfo)
	switch {
	case strings.Contains(line, "FAILED"):
		sev = sevErr
	case strings.Contains(line, "WARNING"):
		sev = sevWarning
	}
	m := &rfc5424.SyslogMessage{}
	m.SetPriority(facility*8 + sev)
	m.SetVersion(1)
	m.SetTimestamp(t.UTC().Format("2006-01-02T15:04:05.000000Z07:00"))
	m.SetHostname(printable(s.hostname, 255))
	m.SetAppname(AppName)
	msgid := "console"
	if strings.Contains(line, "RESCUE: ") {
		msgid = "marker"
	}
	m.SetMsgID(msgid)
	if s.run != "" {
		m.SetParameter(SDID, "run", s.run)
	}
	m.SetMessage(line)
	return m.String()
}

// printable keeps a header field within RFC 5424's PRINTUSASCII and length.
func printable(v string, n int) string {
	var b strings.Builder
	for _, r := range v {
		if r > 32 && r < 127 {
			b.WriteRune(r)
		}
	}
	out := b.String()
	if len(out) > n {
		out = out[:n]
	}
	if out == "" {
		return "-"
	}
	return out
}

// loop sends queued lines, connecting (again) when needed.
func (s *Sender) loop() {
	defer close(s.done)
	var conn net.Conn
	backoff := 250 * time.Millisecond
	for line := range s.queue {
		msg, err := s.Format(line, time.Now())
		if err != nil {
			s.fail(fmt.Errorf("building the message: %w", err))
			continue
		}
		for attempt := 0; ; attempt++ {
			if conn == nil {
				conn, err = net.DialTimeout(s.network, s.addr, dialTimeout)
				if err != nil {
					conn = nil
					s.fail(err)
					if s.isClosed() && attempt > 0 {
						s.count(false)
						break // shutting down: do not wait for a network that is not coming
					}
					time.Sleep(backoff)
					backoff = min(backoff*2, 5*time.Second)
					continue
				}
				backoff = 250 * time.Millisecond
			}
			frame := msg
			if s.network == "tcp" {
				frame = fmt.Sprintf("%d %s", len(msg), msg) // RFC 6587 octet counting
			}
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err = conn.Write([]byte(frame)); err != nil {
				s.fail(err)
				conn.Close()
				conn = nil
				if attempt >= 2 {
					s.count(false)
					break
				}
				continue
			}
			s.count(true)
			break
		}
	}
	if conn != nil {
		conn.Close()
	}
}

func (s *Sender) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Sender) fail(err error) {
	s.mu.Lock()
	s.lastErr = err.Error()
	s.mu.Unlock()
}

func (s *Sender) count(sent bool) {
	s.mu.Lock()
	if sent {
		s.sent++
	} else {
		s.dropped++
	}
	s.mu.Unlock()
}

// Close sends what is queued (waiting at most timeout) and stops.
func (s *Sender) Close(timeout time.Duration) Stats {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.queue)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-time.After(timeout):
	}
	return s.Stats()
}

// Stats returns the counts so far.
func (s *Sender) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Server: s.network + "://" + s.addr, Sent: s.sent, Dropped: s.dropped, Error: s.lastErr}
}
