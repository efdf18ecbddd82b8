package coldplug

// Fnmatch reports whether name matches the shell glob pattern with the
// semantics of fnmatch(3) called with flags 0, which is how kmod matches a
// device's modalias against modules.alias: '*' matches any run of bytes
// (including '/'), '?' any one byte, '[...]' a byte class with ranges and
// '!' or '^' negation, and '\' quotes the next byte. A malformed class
// ('[' without ']') matches a literal '['.
func Fnmatch(pattern, name string) bool {
	p, n := 0, 0
	// Backtracking point for the last '*': where in the pattern to resume
	// and which name byte the star consumes next.
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				for p < len(pattern) && pattern[p] == '*' {
					p++
				}
				if p == len(pattern) {
					return true
				}
				starP, starN = p, n
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				if ok, next, valid := matchClass(pattern, p, name[n]); valid {
					if ok {
						p, n = next, n+1
						continue
					}
				} else if name[n] == '[' {
					p++
					n++
					continue
				}
			case '\\':
				if p+1 < len(pattern) {
					if pattern[p+1] == name[n] {
						p += 2
						n++
						continue
					}
				} else if name[n] == '\\' {
					p++
					n++
					continue
				}
			default:
				if c == name[n] {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		p, n = starP, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches byte b against the class starting at pattern[p] ==
// '['. It returns whether b is in the class, the index after the closing
// ']', and whether the class is well formed.
func matchClass(pattern string, p int, b byte) (ok bool, next int, valid bool) {
	i := p + 1
	negate := false
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(pattern) {
		c := pattern[i]
		if c == ']' && !first {
			return ok != negate, i + 1, true
		}
		first = false
		if c == '\\' && i+1 < len(pattern) {
			i++
			c = pattern[i]
		}
		lo, hi := c, c
		if i+2 < len(pattern) && pattern[i+1] == '-' && pattern[i+2] != ']' {
			hi = pattern[i+2]
			if hi == '\\' && i+3 < len(pattern) {
				i++
				hi = pattern[i+2]
			}
			i += 2
		}
		if lo <= b && b <= hi {
			ok = true
		}
		i++
	}
	return false, 0, false
}
