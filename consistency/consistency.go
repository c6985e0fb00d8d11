// Package consistency parses the rules that choose, per path of the share,
// how an open is checked against the origin.
//
// A rule is GLOB=MODE (the --consistency flag, repeatable, or the
// consistency list of the daemon's configuration file). GLOB is relative
// to the share and matched segment by segment with path.Match syntax; a
// segment "**" matches any number of segments, none included, so
// "datasets/**" matches the directory datasets and everything below it.
// MODE is one of:
//
//	strict          every open asks the origin (close-to-open, the default)
//	ttl:DURATION    an open trusts the node's last check of the file for
//	                DURATION (> 0); the kernel keeps names and attributes
//	                for as long
//
// Rules are tried in the order given and the first match wins; a name no
// rule matches is strict.
package consistency

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// Rule is one GLOB=MODE rule.
type Rule struct {
	Glob string
	// TTL: how long a check of a file against the origin stands for later
	// opens; 0 is strict.
	TTL  time.Duration
	segs []string
}

// Rules are rules in the order given: the first match wins.
type Rules []Rule

// Parse parses one GLOB=MODE rule.
func Parse(s string) (Rule, error) {
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return Rule{}, fmt.Errorf("consistency rule %q: want GLOB=strict or GLOB=ttl:DURATION", s)
	}
	glob, mode := strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+1:])
	segs, err := splitGlob(glob)
	if err != nil {
		return Rule{}, fmt.Errorf("consistency rule %q: %w", s, err)
	}
	r := Rule{Glob: glob, segs: segs}
	switch {
	case mode == "strict":
	case strings.HasPrefix(mode, "ttl:"):
		d, err := time.ParseDuration(strings.TrimPrefix(mode, "ttl:"))
		if err != nil {
			return Rule{}, fmt.Errorf("consistency rule %q: %w", s, err)
		}
		if d <= 0 {
			return Rule{}, fmt.Errorf("consistency rule %q: the TTL must be positive (GLOB=strict for none)", s)
		}
		r.TTL = d
	default:
		return Rule{}, fmt.Errorf("consistency rule %q: unknown mode %q (want strict or ttl:DURATION)", s, mode)
	}
	return r, nil
}

// ParseAll parses rules in order.
func ParseAll(vals []string) (Rules, error) {
	var rs Rules
	for _, v := range vals {
		r, err := Parse(v)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// splitGlob checks a glob and splits it into segments ("**" runs merged).
func splitGlob(glob string) ([]string, error) {
	if glob == "" {
		return nil, fmt.Errorf("empty glob")
	}
	if strings.HasPrefix(glob, "/") {
		return nil, fmt.Errorf("glob %q: globs are relative to the share", glob)
	}
	var segs []string
	for _, g := range strings.Split(glob, "/") {
		switch g {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("glob %q: .. is not allowed", glob)
		case "**":
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue
			}
		default:
			if _, err := path.Match(g, ""); err != nil {
				return nil, fmt.Errorf("glob %q: %w", glob, err)
			}
		}
		segs = append(segs, g)
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("glob %q matches only the share's root (** for everything)", glob)
	}
	return segs, nil
}

// String is the rule as Parse takes it.
func (r Rule) String() string {
	if r.TTL == 0 {
		return r.Glob + "=strict"
	}
	return r.Glob + "=ttl:" + r.TTL.String()
}

// Matches reports whether the rule's glob matches name, a path relative to
// the share ("." for its root).
func (r Rule) Matches(name string) bool {
	segs := r.segs
	if segs == nil {
		var err error
		if segs, err = splitGlob(r.Glob); err != nil {
			return false
		}
	}
	return match(segs, nameSegs(name))
}

// TTL is the TTL of the first rule matching name, 0 (strict) if none does.
func (rs Rules) TTL(name string) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	ns := nameSegs(name)
	for _, r := range rs {
		segs := r.segs
		if segs == nil {
			var err error
			if segs, err = splitGlob(r.Glob); err != nil {
				continue
			}
		}
		if match(segs, ns) {
			return r.TTL
		}
	}
	return 0
}

// Any reports whether some rule has a TTL.
func (rs Rules) Any() bool {
	for _, r := range rs {
		if r.TTL > 0 {
			return true
		}
	}
	return false
}

// Strings are the rules as Parse takes them.
func (rs Rules) Strings() []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func nameSegs(name string) []string {
	name = strings.Trim(name, "/")
	if name == "" || name == "." {
		return nil
	}
	return strings.Split(name, "/")
}

// match matches glob segments g against name segments n.
func match(g, n []string) bool {
	for len(g) > 0 {
		if g[0] == "**" {
			if len(g) == 1 {
				return true
			}
			for i := 0; i <= len(n); i++ {
				if match(g[1:], n[i:]) {
					return true
				}
			}
			return false
		}
		if len(n) == 0 {
			return false
		}
		if ok, _ := path.Match(g[0], n[0]); !ok {
			return false
		}
		g, n = g[1:], n[1:]
	}
	return len(n) == 0
}
