package remote

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in                                         string
		scheme, host, port, user, domain, path, pw string
	}{
		{"smb://CORP;admin@nas:1445/images/esxi.img.zst", "smb", "nas", "1445", "admin", "CORP", "images/esxi.img.zst", ""},
		{"smb://admin:pw12345@nas/images/a%20b.img", "smb", "nas", "", "admin", "", "images/a b.img", "pw12345"},
		{"ssh://root@10.0.0.5/srv/img/esxi.img", "sftp", "10.0.0.5", "", "root", "", "srv/img/esxi.img", ""},
		{"sftp://u@[::1]:2222/x.img?hostkey=SHA256:abc", "sftp", "::1", "2222", "u", "", "x.img", ""},
		{"nfs://filer/vol/images/esxi.img", "nfs", "filer", "", "", "", "vol/images/esxi.img", ""},
		{"s3://bucket/dir/esxi.img.zst?endpoint=https://minio:9000&region=eu-1", "s3", "bucket", "", "", "", "dir/esxi.img.zst", ""},
	} {
		u, err := Parse(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		got := []string{u.Scheme, u.Host, u.Port, u.User, u.Domain, u.Path, u.Password}
		want := []string{c.scheme, c.host, c.port, c.user, c.domain, c.path, c.pw}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: got %q, want %q", c.in, got, want)
		}
		if c.pw != "" && strings.Contains(u.String(), c.pw) {
			t.Errorf("%s: String shows the password: %s", c.in, u)
		}
	}
	for _, bad := range []string{"smb://", "nfs://host/", "ftp://h/x", "s3://b/", "sftp://u:topsecret1@h:99999/x"} {
		_, err := Parse(bad)
		if err == nil {
			t.Errorf("%s: no error", bad)
		} else if strings.Contains(err.Error(), "topsecret1") {
			t.Errorf("%s: password in error %v", bad, err)
		}
	}
	if u, _ := Parse("s3://b/dir/x.img?region=r"); u.Sibling(".bmap").Path != "dir/x.img.bmap" || !strings.Contains(u.Sibling(".bmap").String(), "x.img.bmap?region=r") {
		t.Errorf("Sibling: %+v", u.Sibling(".bmap"))
	}
}

func TestTempName(t *testing.T) {
	for in, want := range map[string]string{"a.img": ".a.img.partial", "/d/e/a.img": "/d/e/.a.img.partial", `x\y`: `x\.y.partial`} {
		if got := TempName(in); got != want {
			t.Errorf("TempName(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("smb://CORP;admin:pw@nas:445/share/x.img")
	f.Add("s3://b/k?endpoint=http://h:1")
	f.Fuzz(func(t *testing.T, in string) {
		u, err := Parse(in)
		if err != nil {
			return
		}
		if u.Password != "" && len(u.Password) >= 4 && strings.Contains(u.String(), u.Password) {
			t.Errorf("String shows the password of %q", in)
		}
	})
}
