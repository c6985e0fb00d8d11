package consistency

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		glob string
		ttl  time.Duration
		bad  bool
	}{
		{in: "datasets/**=ttl:30s", glob: "datasets/**", ttl: 30 * time.Second},
		{in: "**=ttl:1m", glob: "**", ttl: time.Minute},
		{in: "scratch/*=strict", glob: "scratch/*"},
		{in: " a/b = ttl:2s ", glob: "a/b", ttl: 2 * time.Second},
		{in: "datasets/**", bad: true},
		{in: "datasets/**=ttl:", bad: true},
		{in: "datasets/**=ttl:0s", bad: true},
		{in: "datasets/**=ttl:-1s", bad: true},
		{in: "datasets/**=loose", bad: true},
		{in: "/abs/**=ttl:1s", bad: true},
		{in: "../up=ttl:1s", bad: true},
		{in: "=ttl:1s", bad: true},
		{in: ".=ttl:1s", bad: true},
		{in: "a/[=ttl:1s", bad: true},
	} {
		r, err := Parse(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.in, r)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if r.Glob != tc.glob || r.TTL != tc.ttl {
			t.Errorf("Parse(%q) = %q %s, want %q %s", tc.in, r.Glob, r.TTL, tc.glob, tc.ttl)
		}
		if back, err := Parse(r.String()); err != nil || back.Glob != r.Glob || back.TTL != r.TTL {
			t.Errorf("Parse(%q).String() = %q does not parse back: %v", tc.in, r.String(), err)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"datasets/**", "datasets", true},
		{"datasets/**", "datasets/a", true},
		{"datasets/**", "datasets/a/b/c.bin", true},
		{"datasets/**", "datasetsx/a", false},
		{"datasets/**", "other/datasets/a", false},
		{"datasets/**", ".", false},
		{"**", ".", true},
		{"**", "a/b", true},
		{"**/*.bin", "x.bin", true},
		{"**/*.bin", "a/b/x.bin", true},
		{"**/*.bin", "a/b/x.txt", false},
		{"a/**/c", "a/c", true},
		{"a/**/c", "a/b/b/c", true},
		{"a/**/c", "a/b/d", false},
		{"a/*", "a/b", true},
		{"a/*", "a/b/c", false},
		{"a/*", "a", false},
		{"a", "a", true},
		{"a", "a/b", false},
		{"./a/**", "a/b", true},
	} {
		r, err := Parse(tc.glob + "=ttl:1s")
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.glob, err)
		}
		if got := r.Matches(tc.name); got != tc.want {
			t.Errorf("%q matches %q: %v, want %v", tc.glob, tc.name, got, tc.want)
		}
	}
}

// The first match wins; no match is strict.
func TestRulesFirstMatchWins(t *testing.T) {
	rs, err := ParseAll([]string{"datasets/scratch/**=strict", "datasets/**=ttl:30s", "**/*.idx=ttl:5s"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]time.Duration{
		"datasets/train/0001.jpg":   30 * time.Second,
		"datasets":                  30 * time.Second,
		"datasets/scratch/tmp":      0,
		"datasets/scratch":          0,
		"datasets/x.idx":            30 * time.Second,
		"home/x.idx":                5 * time.Second,
		"home/user/notes.txt":       0,
		".":                         0,
		"datasets/train/sub/f.json": 30 * time.Second,
	} {
		if got := rs.TTL(name); got != want {
			t.Errorf("TTL(%q) = %s, want %s", name, got, want)
		}
	}
	if !rs.Any() {
		t.Error("Any() = false with a TTL rule")
	}
	if (Rules{}).TTL("a") != 0 || (Rules{}).Any() {
		t.Error("no rules: want strict")
	}
	if _, err := ParseAll([]string{"a=ttl:1s", "bad"}); err == nil {
		t.Error("ParseAll accepted a bad rule")
	}
}
