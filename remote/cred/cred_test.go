package cred

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := "# comment\n\nuser = admin\npassword=\"p@ss word=1\"\ndomain=CORP\nssh_key=/stick/id_ed25519\nknown_hosts=/stick/known_hosts\ns3_access_key=AKIAEXAMPLE\ns3_secret_key='wJalrXUtnFEMI/K7MDENG'\n"
	c, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Cred{User: "admin", Password: "p@ss word=1", Domain: "CORP", SSHKey: "/stick/id_ed25519", KnownHosts: "/stick/known_hosts", S3AccessKey: "AKIAEXAMPLE", S3SecretKey: "wJalrXUtnFEMI/K7MDENG"}
	if *c != want {
		t.Errorf("got %+v", *c)
	}
	for _, s := range []string{c.String(), fmt.Sprintf("%v %+v %#v %s", c, c, c, c)} {
		for _, sec := range []string{"p@ss word=1", "AKIAEXAMPLE", "wJalrXUtnFEMI"} {
			if strings.Contains(s, sec) {
				t.Errorf("secret %q shown in %q", sec, s)
			}
		}
	}
	if got := Scrub("error: login with p@ss word=1 failed, key wJalrXUtnFEMI/K7MDENG"); strings.Contains(got, "p@ss") || strings.Contains(got, "wJalr") {
		t.Errorf("Scrub left a secret: %q", got)
	}
	if err := ScrubError(errors.New("x p@ss word=1 y")); strings.Contains(err.Error(), "p@ss") {
		t.Errorf("ScrubError: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"password", "passwd=hunter2-secret", "user"} {
		_, err := Parse(strings.NewReader(in))
		if err == nil {
			t.Errorf("%q: no error", in)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the value is in the error %q", in, err)
		}
	}
}

func TestScrubURLs(t *testing.T) {
	for in, want := range map[string]string{
		"smb://CORP;admin:Secret99@nas/share/x.img":                    "smb://CORP;admin:***@nas/share/x.img",
		"get sftp://root:toor1234@10.0.0.1/x failed":                   "get sftp://root:***@10.0.0.1/x failed",
		"https://b.s3.amazonaws.com/k?X-Amz-Signature=abcdef&x=1":      "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&x=1",
		"https://h/k?X-Amz-Credential=AKIA%2F20260101&X-Amz-Date=2026": "https://h/k?X-Amz-Credential=***&X-Amz-Date=2026",
		"nfs://nas/export/x.img":                                       "nfs://nas/export/x.img",
	} {
		if got := Scrub(in); got != want {
			t.Errorf("Scrub(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("user=a\npassword=b\n")
	f.Add("# x\ns3_secret_key=\"q\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in))
		if err != nil {
			return
		}
		if c.Password != "" && len(c.Password) >= 4 && strings.Contains(c.String(), c.Password) {
			t.Errorf("String shows the password")
		}
	})
}
