package netup

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func mac(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }

func TestChoose(t *testing.T) {
	cands := []Candidate{
		{Name: "eno1", MAC: mac("aa:00:00:00:00:01")},
		{Name: "eno2", MAC: mac("aa:00:00:00:00:02"), Carrier: true},
		{Name: "eno3", MAC: mac("aa:00:00:00:00:03")},
	}
	for _, tc := range []struct {
		name, device, bootif string
		cands                []Candidate
		want                 []string
		wantErr              string
	}{
		{name: "carrier first", cands: cands, want: []string{"eno2", "eno1", "eno3"}},
		{name: "BOOTIF wins", cands: cands, bootif: "aa:00:00:00:00:03", want: []string{"eno3"}},
		{name: "device wins over BOOTIF", cands: cands, device: "eno1", bootif: "aa:00:00:00:00:03", want: []string{"eno1"}},
		{name: "missing device", cands: cands, device: "eth0", wantErr: "interface eth0 (from ip=) not found; interfaces: eno1 (aa:00:00:00:00:01)"},
		{name: "missing BOOTIF", cands: cands, bootif: "bb:00:00:00:00:01", wantErr: "no interface has the PXE boot MAC bb:00:00:00:00:01"},
		{name: "no NIC", wantErr: "no Ethernet interface found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b net.HardwareAddr
			if tc.bootif != "" {
				b = mac(tc.bootif)
			}
			got, err := Choose(tc.cands, tc.device, b)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Choose = %v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			var names []string
			for _, c := range got {
				names = append(names, c.Name)
			}
			if err != nil || !reflect.DeepEqual(names, tc.want) {
				t.Errorf("Choose = %v, %v; want %v", names, err, tc.want)
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	got := ResolvConf([]net.IP{net.ParseIP("10.0.2.3"), net.ParseIP("1.1.1.1")}, "example.com")
	want := "# written by the rescue system\nsearch example.com\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
	if got != want {
		t.Errorf("ResolvConf = %q, want %q", got, want)
	}
}
