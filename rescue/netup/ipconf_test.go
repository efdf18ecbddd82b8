package netup

import (
	"net"
	"strings"
	"testing"
)

func TestParseIP(t *testing.T) {
	for _, tc := range []struct {
		in      string
		mode    Mode
		client  string
		gw      string
		mask    string
		host    string
		dev     string
		dns     string
		wantErr string
	}{
		{in: "dhcp", mode: ModeDHCP},
		{in: "on", mode: ModeDHCP},
		{in: "any", mode: ModeDHCP},
		{in: "DHCP", mode: ModeDHCP},
		{in: "off", mode: ModeOff},
		{in: "none", mode: ModeOff},
		{in: "10.0.2.15::10.0.2.2:255.255.255.0:esx1:eth0:off:10.0.2.3", mode: ModeStatic,
			client: "10.0.2.15", gw: "10.0.2.2", mask: "ffffff00", host: "esx1", dev: "eth0", dns: "10.0.2.3"},
		{in: "192.168.1.5:192.168.1.1::255.255.0.0:::none", mode: ModeStatic, client: "192.168.1.5", mask: "ffff0000"},
		{in: "192.168.1.5::::", wantErr: "needs a netmask"},
		{in: ":::::eth1:dhcp", mode: ModeDHCP, dev: "eth1"},
		{in: "::::::", mode: ModeDHCP},
		{in: "10.0.2.15::10.0.2.2:255.255.255.0::eth0:off:10.0.2.3:10.0.2.4:10.0.2.5", mode: ModeStatic,
			client: "10.0.2.15", gw: "10.0.2.2", mask: "ffffff00", dev: "eth0", dns: "10.0.2.3 10.0.2.4"},
		{in: "", wantErr: "empty"},
		{in: "static", wantErr: "unknown mode"},
		{in: "10.0.2.300::::::off", wantErr: "not an IPv4 address"},
		{in: "10.0.2.15:::255.0.255.0::eth0:off", wantErr: "not contiguous"},
		{in: "10.0.2.15::10.0.3.1:255.255.255.0::eth0:off", wantErr: "outside"},
		{in: "10.0.2.15:::255.255.255.0::eth0:rarp", wantErr: "rarp is not supported"},
		{in: "10.0.2.15:::255.255.255.0::eth0:bogus", wantErr: "unknown autoconf"},
		{in: ":::::eth0:off", wantErr: "needs a client address"},
		{in: "1:2:3:4:5:6:7:8:9:10:11", wantErr: "at most 10"},
		{in: "fe80::1", wantErr: "not an IPv4"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			c, err := ParseIP(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseIP(%q) = %+v, %v; want error containing %q", tc.in, c, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIP(%q): %v", tc.in, err)
			}
			if c.Mode != tc.mode || ipStr(c.Client) != tc.client || ipStr(c.Gateway) != tc.gw ||
				c.Netmask.String() != orNil(tc.mask) || c.Hostname != tc.host || c.Device != tc.dev {
				t.Errorf("ParseIP(%q) = %+v", tc.in, c)
			}
			var dns []string
			for _, d := range c.DNS {
				dns = append(dns, d.String())
			}
			if strings.Join(dns, " ") != tc.dns {
				t.Errorf("ParseIP(%q) DNS = %v, want %q", tc.in, dns, tc.dns)
			}
		})
	}
}

func ipStr(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

func orNil(s string) string {
	if s == "" {
		return "<nil>"
	}
	return s
}

func TestParseBOOTIF(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{in: "01-52-54-00-12-34-56", want: "52:54:00:12:34:56"},
		{in: "01-AA-BB-CC-DD-EE-FF", want: "aa:bb:cc:dd:ee:ff"},
		{in: "52-54-00-12-34-56", wantErr: "not Ethernet"},
		{in: "01-52-54-00-12-34", wantErr: "not a 6-byte MAC"},
		{in: "01-52-54-00-12-34-zz", wantErr: "not a 6-byte MAC"},
		{in: "01-00-11-22-33-44-55-66-77-88-99-aa-bb-cc-dd-ee-ff-00-11-22", wantErr: "not a 6-byte MAC"},
		{in: "0152540012345", wantErr: "want <hwtype>-<mac>"},
		{in: "", wantErr: "want <hwtype>-<mac>"},
	} {
		mac, err := ParseBOOTIF(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseBOOTIF(%q) = %v, %v; want error containing %q", tc.in, mac, err, tc.wantErr)
			}
			continue
		}
		if err != nil || mac.String() != tc.want {
			t.Errorf("ParseBOOTIF(%q) = %v, %v; want %s", tc.in, mac, err, tc.want)
		}
	}
}

func FuzzParseIP(f *testing.F) {
	for _, s := range []string{"dhcp", "10.0.2.15::10.0.2.2:255.255.255.0:h:eth0:off:10.0.2.3", ":::::eth1:dhcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseIP(s)
		if err != nil {
			return
		}
		if c.Mode == ModeStatic && (c.Client == nil || c.Netmask == nil) {
			t.Fatalf("ParseIP(%q): static without address or mask: %+v", s, c)
		}
	})
}

func TestBroadcast(t *testing.T) {
	for _, tc := range []struct{ ip, mask, want string }{
		{"10.99.0.11", "255.255.255.0", "10.99.0.255"},
		{"192.0.2.130", "255.255.255.128", "192.0.2.255"},
		{"10.1.2.3", "255.0.0.0", "10.255.255.255"},
	} {
		m := net.IPMask(net.ParseIP(tc.mask).To4())
		if got := Broadcast(net.ParseIP(tc.ip), m); got.String() != tc.want {
			t.Errorf("Broadcast(%s/%s) = %s, want %s", tc.ip, tc.mask, got, tc.want)
		}
	}
	if Broadcast(net.ParseIP("2001:db8::1"), net.CIDRMask(64, 128)) != nil {
		t.Error("IPv6 has no broadcast")
	}
}
