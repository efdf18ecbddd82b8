package system

import "testing"

func TestLockdownMode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"[none] integrity confidentiality\n", "none"},
		{"none [integrity] confidentiality\n", "integrity"},
		{"none integrity [confidentiality]\n", "confidentiality"},
		{"", ""},
	} {
		if got := lockdownMode(tc.in); got != tc.want {
			t.Errorf("lockdownMode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
