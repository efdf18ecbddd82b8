package coldplug

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// msg builds a kernel uevent message as the kernel sends it.
func msg(action, devpath string, env ...string) []byte {
	parts := append([]string{action + "@" + devpath, "ACTION=" + action, "DEVPATH=" + devpath}, env...)
	return []byte(strings.Join(parts, "\x00") + "\x00")
}

func TestParseUevent(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    *Uevent
		wantErr string
	}{
		{"scsi disk behind mptsas", msg("add", "/devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:0",
			"SUBSYSTEM=scsi", "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00", "SEQNUM=1234"),
			&Uevent{Action: "add", DevPath: "/devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:0", Env: map[string]string{
				"ACTION": "add", "DEVPATH": "/devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:0", "SUBSYSTEM": "scsi",
				"DEVTYPE": "scsi_device", "MODALIAS": "scsi:t-0x00", "SEQNUM": "1234"}}, ""},
		{"usb interface, no trailing NUL", []byte("add@/devices/usb1/1-1/1-1:1.0\x00ACTION=add\x00MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"),
			&Uevent{Action: "add", DevPath: "/devices/usb1/1-1/1-1:1.0", Env: map[string]string{"ACTION": "add",
				"MODALIAS": "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"}}, ""},
		{"value with '='", msg("change", "/devices/x", "KEY=a=b"), &Uevent{Action: "change", DevPath: "/devices/x",
			Env: map[string]string{"ACTION": "change", "DEVPATH": "/devices/x", "KEY": "a=b"}}, ""},
		{"udev rebroadcast", []byte("libudev\x00\xfe\xed\xca\xfe"), nil, "no ACTION@DEVPATH"},
		{"empty", nil, nil, "empty"},
		{"no devpath", []byte("add@\x00ACTION=add"), nil, "no ACTION@DEVPATH"},
		{"action mismatch", []byte("add@/devices/x\x00ACTION=remove\x00"), nil, "ACTION="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseUevent(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseUevent(f *testing.F) {
	f.Add(msg("add", "/devices/pci0000:00/0000:00:04.0/host2", "MODALIAS=scsi:t-0x00"))
	f.Add([]byte("libudev\x00xyz"))
	f.Add([]byte("add@/x\x00=\x00A=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseUevent(b)
		if err != nil {
			return
		}
		if u.Action == "" || !strings.HasPrefix(u.DevPath, "/") {
			t.Fatalf("accepted %q as %+v", b, u)
		}
		if a, ok := u.Env["ACTION"]; ok && a != u.Action {
			t.Fatalf("ACTION %q != header %q", a, u.Action)
		}
	})
}

// fakeEvents is a UeventSource fed by the test: a nil *Uevent with err
// set delivers that error.
type fakeEvents struct {
	ch     chan fakeEvent
	closed chan struct{}
}

type fakeEvent struct {
	u   *Uevent
	err error
}

func newFakeEvents() *fakeEvents {
	return &fakeEvents{ch: make(chan fakeEvent, 16), closed: make(chan struct{})}
}

func (f *fakeEvents) Read() (*Uevent, error) {
	select {
	case e := <-f.ch:
		return e.u, e.err
	case <-f.closed:
		return nil, os.ErrClosed
	}
}

func (f *fakeEvents) Close() error {
	select {
	case <-f.closed:
	default:
		close(f.closed)
	}
	return nil
}

func (f *fakeEvents) send(t *testing.T, b []byte) {
	u, err := ParseUevent(b)
	if err != nil {
		t.Fatal(err)
	}
	f.ch <- fakeEvent{u: u}
}

// waitLoaded polls p until module m is loaded (the follower runs in the
// background), failing after 30 s (generous: the wait ends as soon as it
// is loaded; 2 s was short with the follower descheduled under load).
func waitLoaded(t *testing.T, p *Plug, m string) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if contains(p.Result().Loaded, m) {
			return
		}
	}
	t.Fatalf("%s not loaded; result %+v", m, p.Result())
}

// TestPlugLateDevices is the mptsas/usb-storage case: the HBA driver loads
// in the rounds, the disk behind it is announced by a uevent only after
// the rounds settled, and must still get sd_mod; a removal, a duplicate
// and an event without a modalias load nothing.
func TestPlugLateDevices(t *testing.T) {
	sys := t.TempDir()
	d := filepath.Join(sys, "bus/pci/devices/0000:00:04.0")
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "modalias"), []byte("pci:v00001000d00000054sv00001000sd00008000bc01sc00i00\n"), 0o444)
	aliases, err := ParseAliases(strings.NewReader(`alias pci:v00001000d00000054sv*sd*bc*sc*i* mptsas
alias scsi:t-0x00* sd_mod
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
`))
	if err != nil {
		t.Fatal(err)
	}
	l := &busLoader{sys: sys}
	ev := newFakeEvents()
	p, err := Start(context.Background(), Options{Sys: sys, Aliases: aliases, Loader: l,
		Settle: 50 * time.Millisecond, Poll: 10 * time.Millisecond, Timeout: 5 * time.Second}, ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Result().Loaded; !reflect.DeepEqual(got, []string{"mptsas"}) {
		t.Fatalf("after the rounds loaded %v, want [mptsas]", got)
	}
	ev.send(t, msg("remove", "/devices/x", "MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"))
	ev.send(t, msg("add", "/devices/pci0000:00/0000:00:04.0/host2/target2:0:0", "SUBSYSTEM=scsi", "DEVTYPE=scsi_target"))
	ev.send(t, msg("add", "/devices/pci0000:00/0000:00:04.0/host2/target2:0:0/2:0:0:0", "SUBSYSTEM=scsi", "MODALIAS=scsi:t-0x00"))
	waitLoaded(t, p, "sd_mod")
	ev.send(t, msg("add", "/devices/pci0000:00/0000:00:04.0/host2/target2:0:1/2:0:1:0", "SUBSYSTEM=scsi", "MODALIAS=scsi:t-0x00"))
	ev.send(t, msg("add", "/devices/usb1/1-1/1-1:1.0", "MODALIAS=usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00"))
	waitLoaded(t, p, "usb_storage")
	res := p.Stop()
	if want := []string{"mptsas", "sd_mod", "usb_storage"}; !reflect.DeepEqual(l.loaded, want) {
		t.Errorf("loader saw %v, want %v (each once, nothing for remove or events without a modalias)", l.loaded, want)
	}
	if !reflect.DeepEqual(res.Late, []string{"sd_mod", "usb_storage"}) || res.Events != 3 {
		t.Errorf("result %+v: want Late [sd_mod usb_storage] and 3 add events with a modalias", res)
	}
	if !strings.Contains(res.Summary(), "loaded later for new devices: [sd_mod usb_storage]") {
		t.Errorf("summary %q does not name the late modules", res.Summary())
	}
	select {
	case <-ev.closed:
	default:
		t.Error("Stop did not close the event source")
	}
}

// TestPlugLostEvents: when the kernel dropped events, the follower
// rescans sysfs and finds the device the lost event announced; when the
// source fails it falls back to polling sysfs.
func TestPlugLostEvents(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{{"lost", ErrLost}, {"source broken", errors.New("socket gone")}} {
		t.Run(tc.name, func(t *testing.T) {
			sys := t.TempDir()
			os.MkdirAll(filepath.Join(sys, "bus"), 0o755)
			aliases, _ := ParseAliases(strings.NewReader("alias scsi:t-0x00* sd_mod\n"))
			l := &busLoader{sys: sys}
			ev := newFakeEvents()
			p, err := Start(context.Background(), Options{Sys: sys, Aliases: aliases, Loader: l,
				Settle: 20 * time.Millisecond, Poll: 5 * time.Millisecond, Timeout: 5 * time.Second}, ev)
			if err != nil {
				t.Fatal(err)
			}
			d := filepath.Join(sys, "bus/scsi/devices/2:0:0:0")
			os.MkdirAll(d, 0o755)
			os.WriteFile(filepath.Join(d, "modalias"), []byte("scsi:t-0x00\n"), 0o444)
			ev.ch <- fakeEvent{err: tc.err}
			waitLoaded(t, p, "sd_mod")
			if res := p.Stop(); !reflect.DeepEqual(res.Late, []string{"sd_mod"}) {
				t.Errorf("late %v, want [sd_mod]", res.Late)
			}
		})
	}
}

// TestOpenUevents opens the real socket where the kernel allows it
// (netlink is not namespaced away in most containers).
func TestOpenUevents(t *testing.T) {
	src, err := OpenUevents()
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	done := make(chan error, 1)
	go func() { _, err := src.Read(); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Log("a real uevent arrived before Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not unblock Read within 10s")
	}
}
