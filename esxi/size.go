package esxi

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize parses a size such as "8G", "8GiB", "512M", "1T" or a plain
// byte count. K, M, G and T are binary (KiB, MiB, GiB, TiB).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	n := int64(v * float64(mult))
	if float64(n) != v*float64(mult) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	return n, nil
}
